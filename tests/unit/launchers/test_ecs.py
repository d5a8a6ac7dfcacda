"""EcsLauncher at the boto3 boundary: a fake ECS that, like dagster's, runs each task as a local
subprocess, and a fake CloudWatch Logs that serves the subprocess's output. Every request the
launcher sends is validated against botocore's real ECS / Logs API models.

The job the fake ECS runs is tests/support/fake_job.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlbatch.launchers import JobFailed, JobId, JobRequest
from mlbatch.launchers.ecs import EcsConfig, EcsLauncher
from mlbatch.store import ObjectStore

from tests.support.paths import REPO

CLUSTER = "ml-batch"
TASK_DEF = {"jobs.train": "mlbatch-train:7", "jobs.score": "mlbatch-score:3"}


def _models() -> dict[str, Any]:
    import botocore.session

    session = botocore.session.get_session()
    return {"ecs": session.get_service_model("ecs"), "logs": session.get_service_model("logs")}


MODELS = _models()


def validate(service: str, operation: str, params: dict[str, Any]) -> None:
    from botocore.validate import validate_parameters

    validate_parameters(params, MODELS[service].operation_model(operation).input_shape)


class FakeEcs:
    """ECS's task API over local processes: RUNNING while the process lives, then STOPPED."""

    def __init__(self, tmp: Path, failures: list[dict] | None = None):
        self.tmp = tmp
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures = failures
        self._ids = itertools.count(1)

    def _call(self, op: str, params: dict[str, Any]) -> None:
        validate("ecs", op, params)
        self.calls.append((op, params))

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [p for op, p in self.calls if op == name]

    def run_task(self, **kw: Any) -> dict[str, Any]:
        self._call("RunTask", kw)
        if self.failures:
            return {"tasks": [], "failures": self.failures}
        task_id = f"{next(self._ids):032x}"
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/{task_id}"
        override = kw["overrides"]["containerOverrides"][0]
        env = {**os.environ, **{e["name"]: e["value"] for e in override.get("environment", [])}}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins")])
        log = self.tmp / f"{task_id}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *override["command"]], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.tasks[arn] = {"proc": proc, "kw": kw, "log": log, "id": task_id, "reason": None}
        return {"tasks": [{"taskArn": arn, "lastStatus": "PROVISIONING"}], "failures": []}

    def list_tasks(self, **kw: Any) -> dict[str, Any]:
        self._call("ListTasks", kw)
        arns = [
            arn
            for arn, t in self.tasks.items()
            if t["kw"]["startedBy"] == kw.get("startedBy") and t["proc"].poll() is None and t["reason"] is None
        ]
        return {"taskArns": arns}

    def describe_tasks(self, **kw: Any) -> dict[str, Any]:
        self._call("DescribeTasks", kw)
        out = []
        for arn in kw["tasks"]:
            t = self.tasks[arn]
            code = t["proc"].poll()
            task = {"taskArn": arn, "taskDefinitionArn": t["kw"]["taskDefinition"], "lastStatus": "RUNNING"}
            container = {"name": "job", "lastStatus": "RUNNING"}
            if code is not None:
                task.update(lastStatus="STOPPED", stoppedReason=t["reason"] or "Essential container in task exited")
                container.update(lastStatus="STOPPED", exitCode=code if code >= 0 else 128 - code)
            task["containers"] = [container]
            out.append(task)
        return {"tasks": out, "failures": []}

    def describe_task_definition(self, **kw: Any) -> dict[str, Any]:
        self._call("DescribeTaskDefinition", kw)
        options = {"awslogs-group": "/mlbatch/jobs", "awslogs-stream-prefix": "mlbatch", "awslogs-region": "us-east-1"}
        return {
            "taskDefinition": {
                "family": kw["taskDefinition"].split(":")[0],
                "containerDefinitions": [
                    {"name": "job", "logConfiguration": {"logDriver": "awslogs", "options": options}}
                ],
            }
        }

    def stop_task(self, **kw: Any) -> dict[str, Any]:
        self._call("StopTask", kw)
        t = self.tasks[kw["task"]]
        t["reason"] = kw.get("reason")
        t["proc"].terminate()
        return {"task": {"taskArn": kw["task"], "desiredStatus": "STOPPED"}}


class FakeLogs:
    """CloudWatch get_log_events over the fake tasks' output files (stream prefix/container/task-id)."""

    class exceptions:  # noqa: N801 - mirrors boto3's client.exceptions namespace
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self, ecs: FakeEcs):
        self.ecs = ecs
        self.streams: list[tuple[str, str]] = []

    def get_log_events(self, **kw: Any) -> dict[str, Any]:
        validate("logs", "GetLogEvents", kw)
        self.streams.append((kw["logGroupName"], kw["logStreamName"]))
        task_id = kw["logStreamName"].rsplit("/", 1)[-1]
        task = next((t for t in self.ecs.tasks.values() if t["id"] == task_id), None)
        if task is None or kw["logStreamName"] != f"mlbatch/job/{task_id}":
            raise self.exceptions.ResourceNotFoundException(kw["logStreamName"])
        lines = [line for line in task["log"].read_text().splitlines()]
        start = int(kw.get("nextToken", "f/0").split("/")[1])
        events = [{"timestamp": 0, "message": m, "ingestionTime": 0} for m in lines[start:]]
        return {"events": events, "nextForwardToken": f"f/{len(lines)}", "nextBackwardToken": "b/0"}


@pytest.fixture
def fx(tmp_path: Path) -> dict[str, Any]:
    store = ObjectStore((tmp_path / "objects").as_uri())
    ecs = FakeEcs(tmp_path)
    config = EcsConfig(
        cluster=CLUSTER,
        train_task_definition=TASK_DEF["jobs.train"],
        score_task_definition=TASK_DEF["jobs.score"],
        gpu_capacity_provider="gpu-g5",
        cpu_capacity_provider="cpu-spot",
        subnets=("subnet-1", "subnet-2"),
        security_groups=("sg-1",),
        poll_s=0.05,
        max_poll_s=0.2,
    )
    launcher = EcsLauncher(store, config, ecs_client=ecs, logs_client=FakeLogs(ecs))
    return {"store": store, "ecs": ecs, "launcher": launcher, "tmp": tmp_path}


def job(fx: dict[str, Any], *, gpu: int = 0, exit: int = 0, sleep: float = 0, marker: bool = True, **kw) -> JobRequest:
    marker_path = fx["tmp"] / "objects" / "models" / "m" / "v1" / "_SUCCESS"
    args = ["--marker", str(marker_path) if marker else "", "--exit", str(exit), "--sleep", str(sleep)]
    return JobRequest(
        job_id=JobId("device_gender__train", "train", "scheduled__2024-05-01T00:00:00+00:00", kw.pop("map_index", -1)),
        module="tests.support.fake_job",
        args=args,
        success_uri=fx["store"].uri("models/m/v1/_SUCCESS"),
        gpu=gpu,
        vcpu=4,
        memory_gib=16,
        **kw,
    )


def test_run_task_request_and_success(fx: dict[str, Any]) -> None:
    request = job(fx, gpu=1, env={"MLBATCH_CODE_VERSION": "abc123"})
    result = fx["launcher"].run(request)
    assert result.reused is False
    assert "job: step 2 of 2" in result.log_tail  # CloudWatch lines reach the task log

    [run] = fx["ecs"].ops("RunTask")  # already validated against botocore's ECS model
    token = request.job_id.token
    assert run["startedBy"] == token and len(token) <= 36
    assert run["cluster"] == CLUSTER and run["taskDefinition"] == "mlbatch-score:3"  # not jobs.train
    assert run["capacityProviderStrategy"] == [{"capacityProvider": "gpu-g5", "weight": 1, "base": 0}]
    assert "launchType" not in run  # a capacity provider strategy and a launch type exclude each other
    [container] = run["overrides"]["containerOverrides"]
    assert container["name"] == "job"
    assert container["command"] == [request.module, *request.args]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert (container["cpu"], container["memory"]) == (4096, 16384)
    assert (run["overrides"]["cpu"], run["overrides"]["memory"]) == ("4096", "16384")
    # The job's own env and its CPU allotment, which sizes its thread pools on an EC2 host's many cores.
    assert container["environment"] == [
        {"name": "MLBATCH_CODE_VERSION", "value": "abc123"},
        {"name": "MLBATCH_JOB_VCPU", "value": "4"},
    ]
    names = {e["name"] for e in container["environment"]}
    assert not {n for n in names if any(w in n for w in ("SECRET", "ACCESS_KEY", "TOKEN", "PASSWORD"))}
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
    assert fx["launcher"].logs.streams[0][0] == "/mlbatch/jobs"  # the task definition's awslogs group


def test_cpu_job_uses_cpu_capacity_provider_and_no_gpu(fx: dict[str, Any]) -> None:
    kwargs = fx["launcher"].run_task_kwargs(job(fx, gpu=0))
    validate("ecs", "RunTask", kwargs)
    assert kwargs["capacityProviderStrategy"][0]["capacityProvider"] == "cpu-spot"
    assert "resourceRequirements" not in kwargs["overrides"]["containerOverrides"][0]


def test_credentials_in_the_environment_are_refused(fx: dict[str, Any]) -> None:
    request = job(fx, env={"AWS_SECRET_ACCESS_KEY": "x", "MLBATCH_APPDB_PASSWORD": "y"})
    with pytest.raises(
        ValueError, match=r"\['AWS_SECRET_ACCESS_KEY', 'MLBATCH_APPDB_PASSWORD'\] look like credentials"
    ):
        fx["launcher"].run(request)
    assert fx["ecs"].ops("RunTask") == []


def test_retry_reattaches_to_the_running_task(fx: dict[str, Any]) -> None:
    request = job(fx, sleep=1.0)
    # The first attempt's worker died after RunTask; its task is still running.
    first = fx["ecs"].run_task(**fx["launcher"].run_task_kwargs(request))["tasks"][0]["taskArn"]
    result = fx["launcher"].run(request)
    assert result.reused is False and "job: step 2 of 2" in result.log_tail
    assert len(fx["ecs"].ops("RunTask")) == 1  # the one above: nothing launched on retry
    assert fx["ecs"].ops("ListTasks")[0] == {
        "cluster": CLUSTER,
        "startedBy": request.job_id.token,
        "desiredStatus": "RUNNING",
    }
    assert {p["tasks"][0] for p in fx["ecs"].ops("DescribeTasks")} == {first}


def test_no_relaunch_after_success(fx: dict[str, Any]) -> None:
    request = job(fx)
    assert fx["launcher"].run(request).reused is False
    calls = len(fx["ecs"].calls)
    again = fx["launcher"].run(request)
    assert again.reused is True
    assert len(fx["ecs"].calls) == calls  # not even a ListTasks: the marker decides


def test_failure_raises_with_the_cloudwatch_tail(fx: dict[str, Any]) -> None:
    with pytest.raises(JobFailed) as err:
        fx["launcher"].run(job(fx, exit=3))
    message = str(err.value)
    assert "container exit code 3" in message and "Essential container in task exited" in message
    assert "| job: step 2 of 2" in message and "| job: giving up with exit code 3" in message


def test_exit_zero_without_marker_fails(fx: dict[str, Any]) -> None:
    with pytest.raises(JobFailed, match="exited 0 but wrote no marker"):
        fx["launcher"].run(job(fx, marker=False))


def test_run_task_failure_is_reported(fx: dict[str, Any]) -> None:
    fx["ecs"].failures = [{"arn": "arn:aws:ecs:...:container-instance/x", "reason": "RESOURCE:GPU"}]
    with pytest.raises(JobFailed, match="ECS RunTask started no task: .*RESOURCE:GPU"):
        fx["launcher"].run(job(fx, gpu=1))


def test_kill_stops_the_task(fx: dict[str, Any]) -> None:
    request = job(fx, sleep=120)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fx["launcher"].run(request)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while not fx["ecs"].ops("DescribeTasks") and time.monotonic() < deadline:
        time.sleep(0.05)
    fx["launcher"].kill()
    worker.join(timeout=30)
    assert not worker.is_alive()
    [stop] = fx["ecs"].ops("StopTask")
    assert stop["cluster"] == CLUSTER and stop["task"].endswith("/00000000000000000000000000000001")
    # The reason names the Airflow task, so whoever reads the ECS console knows who stopped it.
    assert stop["reason"] == (
        "mlbatch: Airflow task device_gender__train.train of run scheduled__2024-05-01T00:00:00+00:00 "
        "was stopped (on_kill)"
    )
    assert len(errors) == 1 and isinstance(errors[0], JobFailed)
    assert "was stopped (on_kill)" in str(errors[0]) and "exit code 143" in str(errors[0])


class FakeAsyncEcs:
    """The aiobotocore ECS client the trigger's on_kill uses; requests validated like FakeEcs's."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __aenter__(self) -> FakeAsyncEcs:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def stop_task(self, **kw: Any) -> dict[str, Any]:
        validate("ecs", "StopTask", kw)
        self.calls.append(("StopTask", kw))
        return {"task": {"taskArn": kw["task"], "desiredStatus": "STOPPED"}}


def test_deferred_wait_uses_a_trigger_that_stops_the_task_on_kill(fx: dict[str, Any], monkeypatch) -> None:
    import asyncio

    from airflow.providers.amazon.aws.hooks.ecs import EcsHook
    from mlbatch.triggers import EcsJobDoneTrigger

    request = job(fx, sleep=30)
    arn = fx["launcher"].submit(request)
    trigger = fx["launcher"].trigger(request, arn)
    assert isinstance(trigger, EcsJobDoneTrigger)
    assert (trigger.cluster, trigger.task_arn) == (CLUSTER, arn)
    # The task definition's awslogs stream of this task: its lines reach the task log while deferred.
    assert (trigger.log_group, trigger.log_stream) == ("/mlbatch/jobs", f"mlbatch/job/{arn.rsplit('/', 1)[-1]}")
    # The triggerer rebuilds it from its serialised form: our class, the stop reason kept.
    path, kwargs = trigger.serialize()
    assert path == "mlbatch.triggers.EcsJobDoneTrigger"
    rebuilt = EcsJobDoneTrigger(**kwargs)
    assert "device_gender__train.train" in rebuilt.stop_reason
    client = FakeAsyncEcs()

    async def conn(self: Any) -> FakeAsyncEcs:
        return client

    monkeypatch.setattr(EcsHook, "get_async_conn", conn)
    asyncio.run(rebuilt.on_kill())  # what the triggerer runs when a person marks the task failed
    [(op, stop)] = client.calls
    assert stop == {"cluster": CLUSTER, "task": arn, "reason": rebuilt.stop_reason}
    fx["launcher"].stop(request, arn)  # the fake's own process: end it


def test_result_after_the_trigger_fired_checks_exit_code_and_marker(fx: dict[str, Any]) -> None:
    ok = job(fx)
    arn = fx["launcher"].submit(ok)
    fx["ecs"].tasks[arn]["proc"].wait(timeout=30)
    result = fx["launcher"].result(ok, arn, {"status": "success", "task_arn": arn})
    assert result.reused is False and "job: step 2 of 2" in result.log_tail  # CloudWatch's last lines
    (fx["tmp"] / "objects" / "models" / "m" / "v1" / "_SUCCESS").unlink()  # the marker is per job: a new one
    bad = job(fx, exit=4, map_index=3)
    arn = fx["launcher"].submit(bad)
    fx["ecs"].tasks[arn]["proc"].wait(timeout=30)
    with pytest.raises(JobFailed, match="container exit code 4") as err:
        fx["launcher"].result(bad, arn, {"status": "success", "task_arn": arn})
    assert "| job: giving up with exit code 4" in str(err.value)


def test_a_stopped_task_is_not_reattached_by_the_retry(fx: dict[str, Any]) -> None:
    request = job(fx, sleep=30)
    first = fx["launcher"].submit(request)
    fx["launcher"].stop(request, first)  # on_kill
    fx["ecs"].tasks[first]["proc"].wait(timeout=30)
    second = fx["launcher"].submit(request)  # the retry
    assert second != first and len(fx["ecs"].ops("RunTask")) == 2
    fx["launcher"].stop(request, second)


def test_config_from_env_and_get_launcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlbatch.env import Environment
    from mlbatch.launchers import get_launcher

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
    }.items():
        monkeypatch.setenv(k, v)
    launcher = get_launcher("ecs", Environment.from_env())
    assert isinstance(launcher, EcsLauncher)
    assert launcher.config.subnets == ("subnet-a", "subnet-b") and launcher.config.aws_conn_id == "aws_ml"
    with pytest.raises(ValueError, match="not one of: local, docker, ecs"):
        get_launcher("k8s", Environment.from_env())
