"""EcsLauncher without a server: the RunTask request it builds (validated against botocore's ECS model)
and its configuration. Everything that talks to ECS (launch, logs, reattach, stop, the deferred wait
and the trigger's on_kill) runs over the wire in tests/integration/launchers/test_ecs_wire.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlbatch.backends.launchers import JobId, JobRequest
from mlbatch.backends.launchers.ecs import EcsConfig, EcsLauncher, stop_reason
from mlbatch.backends.store import ObjectStore

CLUSTER = "ml-batch"


def validate_run_task(params: dict[str, Any]) -> None:
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("ecs")
    validate_parameters(params, model.operation_model("RunTask").input_shape)


@pytest.fixture
def launcher(tmp_path: Path) -> EcsLauncher:
    config = EcsConfig(
        cluster=CLUSTER,
        train_task_definition="mlbatch-train:7",
        score_task_definition="mlbatch-score:3",
        gpu_capacity_provider="gpu-g5",
        cpu_capacity_provider="cpu-spot",
        subnets=("subnet-1", "subnet-2"),
        security_groups=("sg-1",),
    )
    # No client is built: run_task_kwargs talks to nothing.
    return EcsLauncher(ObjectStore((tmp_path / "objects").as_uri()), config)


def job(*, gpu: int = 0, env: dict[str, str] | None = None, map_index: int = -1) -> JobRequest:
    return JobRequest(
        job_id=JobId("device_gender__train", "train", "scheduled__2024-05-01T00:00:00+00:00", map_index),
        module="jobs.score",
        args=["--model", "s3://b/models/m/v1/"],
        success_uri="s3://b/models/m/v1/_SUCCESS",
        gpu=gpu,
        vcpu=4,
        memory_gib=16,
        env=env or {},
    )


def test_run_task_request_for_a_gpu_job(launcher: EcsLauncher) -> None:
    request = job(gpu=1, env={"MLBATCH_CODE_VERSION": "abc123"})
    run = launcher.run_task_kwargs(request)
    validate_run_task(run)
    token = request.job_id.token
    assert run["startedBy"] == token and len(token) <= 36
    # The score family's base (not jobs.train's), this model's, on an EC2 capacity provider.
    assert run["cluster"] == CLUSTER and run["taskDefinition"] == "mlbatch-score-device_gender-ec2"
    assert run["capacityProviderStrategy"] == [{"capacityProvider": "gpu-g5", "weight": 1, "base": 0}]
    assert "launchType" not in run  # a capacity provider strategy and a launch type exclude each other
    [container] = run["overrides"]["containerOverrides"]
    assert container["name"] == "job" and container["command"] == [request.module, *request.args]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert (container["cpu"], container["memory"]) == (4096, 16384)
    assert (run["overrides"]["cpu"], run["overrides"]["memory"]) == ("4096", "16384")
    # The job's own env and its CPU allotment, which sizes its thread pools on an EC2 host's many cores.
    assert container["environment"] == [
        {"name": "MLBATCH_CODE_VERSION", "value": "abc123"},
        {"name": "MLBATCH_JOB_VCPU", "value": "4"},
    ]
    assert {t["key"]: t["value"] for t in run["tags"]} == {
        "mlbatch:dag_id": "device_gender__train",
        "mlbatch:task_id": "train",
        "mlbatch:run_id": "scheduled__2024-05-01T00:00:00+00:00",
        "mlbatch:map_index": "-1",
    }
    assert run["networkConfiguration"]["awsvpcConfiguration"] == {
        "subnets": ["subnet-1", "subnet-2"],
        "assignPublicIp": "DISABLED",
        "securityGroups": ["sg-1"],
    }


def test_cpu_job_uses_cpu_capacity_provider_and_no_gpu(launcher: EcsLauncher) -> None:
    run = launcher.run_task_kwargs(job(gpu=0))
    validate_run_task(run)
    assert run["capacityProviderStrategy"][0]["capacityProvider"] == "cpu-spot"
    assert "resourceRequirements" not in run["overrides"]["containerOverrides"][0]


def test_credentials_in_the_environment_are_refused(launcher: EcsLauncher) -> None:
    request = job(env={"AWS_SECRET_ACCESS_KEY": "x", "MLBATCH_APPDB_PASSWORD": "y"})
    with pytest.raises(
        ValueError, match=r"\['AWS_SECRET_ACCESS_KEY', 'MLBATCH_APPDB_PASSWORD'\] look like credentials"
    ):
        launcher.run_task_kwargs(request)


def test_stop_reason_names_the_airflow_task_within_ecs_limit() -> None:
    assert stop_reason(job(map_index=3)) == (
        "mlbatch: Airflow task device_gender__train.train[3] of run scheduled__2024-05-01T00:00:00+00:00 "
        "was stopped (on_kill)"
    )
    long = JobRequest(JobId("d" * 250, "t", "r"), "jobs.score", [], "s3://b/_SUCCESS")
    assert len(stop_reason(long)) == 255  # StopTask's limit


def test_config_from_env_and_get_launcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlbatch.backends.env import Environment
    from mlbatch.backends.launchers import get_launcher

    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path))
    monkeypatch.setenv("MLBATCH_LAUNCHER", "ecs")
    with pytest.raises(ValueError, match="MLBATCH_ECS_CLUSTER"):
        Environment.from_env().launcher  # noqa: B018 - building it is the check
    for k, v in {
        "MLBATCH_ECS_CLUSTER": "c",
        "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "t:1",
        "MLBATCH_ECS_SCORE_TASK_DEFINITION": "s:1",
        "MLBATCH_ECS_SUBNETS": "subnet-a, subnet-b",
        "MLBATCH_ECS_GPU_CAPACITY_PROVIDER": "gpu",
        "MLBATCH_AWS_CONN_ID": "aws_ml",
        "MLBATCH_ECS_TRIGGER_POLL_S": "2",
    }.items():
        monkeypatch.setenv(k, v)
    env = Environment.from_env()
    launcher = get_launcher("ecs", env.store, env.home)
    assert isinstance(launcher, EcsLauncher)
    assert launcher.config.subnets == ("subnet-a", "subnet-b") and launcher.config.aws_conn_id == "aws_ml"
    assert (launcher.config.poll_s, launcher.config.trigger_poll_s) == (5.0, 2.0)  # unset: the default
    monkeypatch.setenv("MLBATCH_ECS_POLL_S", "soon")
    with pytest.raises(ValueError, match="MLBATCH_ECS_POLL_S='soon': expected a positive number of seconds"):
        EcsConfig.from_env()
    with pytest.raises(ValueError, match="not one of: local, docker, ecs"):
        get_launcher("k8s", env.store, env.home)
