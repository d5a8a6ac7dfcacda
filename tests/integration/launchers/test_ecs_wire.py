"""EcsLauncher and its trigger against ECS at the HTTP wire: the production code, unchanged.

``EcsLauncher`` is given no client: it builds ``EcsHook``/``AwsLogsHook`` for ``aws_default``, an
Airflow connection (in the environment) whose endpoint is an :class:`AwsEndpoint` serving the ECS
double (each task a real container of the train or score image) and moto (S3, CloudWatch Logs).
The trigger runs as the triggerer runs it: rebuilt from its serialised kwargs, its ``run()``
iterated under asyncio (aiobotocore through ``EcsHook.get_async_conn()``), its ``on_kill`` awaited
after a user-action cancel. Every request to the double is checked against botocore's ECS model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from mlbatch.backends.launchers import JobFailed, JobId, JobRequest
from mlbatch.backends.launchers.ecs import EcsConfig, EcsLauncher, stop_reason
from mlbatch.backends.launchers.ecs_trigger import EcsJobDoneTrigger
from mlbatch.backends.store import ObjectStore

from devtools.devservers.aws_wire import AwsEndpoint
from devtools.devservers.ecs_double import LABEL_TASK_ARN, start_ecs_double
from tests.support.ecs import (
    CONTAINER,
    LOG_GROUP,
    LOG_PREFIX,
    airflow_aws_connection,
    as_the_triggerer_builds_it,
    client,
    first_event,
    kill_while_running,
    register_job_definition,
    wait_for,
)
from tests.support.jobs import put_train_inputs

CLUSTER = "ml-batch"
N = 4000
DS = "2024-05-01"
RUN = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def aws(docker_client, images: dict[str, str]) -> Iterator[AwsEndpoint]:
    endpoint = start_ecs_double(docker_client, clusters=[CLUSTER])
    try:
        # One family per model and compatibility, as `mlbatch ecs task-definitions` registers them.
        for kind in ("train", "score"):
            register_job_definition(endpoint, f"mlbatch-{kind}-device_gender-ec2", images[kind])
        register_job_definition(endpoint, "mlbatch-missing-device_gender-ec2", "mlbatch/score:no-such-tag")
        with pytest.MonkeyPatch.context() as mp:
            for k, v in airflow_aws_connection(endpoint.endpoint).items():
                mp.setenv(k, v)
            yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture(autouse=True)
def requests_are_valid(aws: AwsEndpoint) -> Iterator[None]:
    yield
    assert aws["ecs"].invalid == []  # nothing the real ECS would have rejected


@pytest.fixture(scope="module")
def store(aws: AwsEndpoint) -> ObjectStore:
    bucket = f"ecs-{uuid.uuid4().hex[:8]}"
    client("s3", aws).create_bucket(Bucket=bucket)
    return ObjectStore(f"s3://{bucket}/root")


def config(**overrides: Any) -> EcsConfig:
    base = EcsConfig(
        cluster=CLUSTER,
        train_task_definition="mlbatch-train",
        score_task_definition="mlbatch-score",
        gpu_capacity_provider="gpu-g5",
        cpu_capacity_provider="cpu-spot",
        subnets=("subnet-1",),
        security_groups=("sg-1",),
        poll_s=0.5,
        max_poll_s=2,
        trigger_poll_s=1,
    )
    return replace(base, **overrides)


@pytest.fixture
def launcher(store: ObjectStore) -> EcsLauncher:
    return EcsLauncher(store, config())  # no clients: the provider's hooks, from the connection


@pytest.fixture(scope="module")
def inputs(store: ObjectStore) -> dict[str, str]:
    """A two-part UNLOAD with its manifest, a labels snapshot and a train config, on the endpoint's S3."""
    return put_train_inputs(store, n=N, unload_prefix=f"unload/{DS}/", version="v-ecs")


def train_request(inputs: dict[str, str]) -> JobRequest:
    return JobRequest(
        job_id=JobId("device_gender__train", "train", f"manual__{RUN}"),
        module="jobs.train",
        args=["--config", inputs["config"], "--features", inputs["manifest"], "--labels", inputs["labels"]]
        + ["--output", inputs["model"]],
        success_uri=inputs["model"] + "_SUCCESS",
    )


def score_request(store: ObjectStore, inputs: dict[str, str], run_id: str, shard: int, model: str = "") -> JobRequest:
    out = store.uri(f"predictions/device_gender/{DS}/{run_id}/part-{shard:04d}.parquet")
    return JobRequest(
        job_id=JobId("device_gender__score", "score", run_id, shard),
        module="jobs.score",
        args=["--model", model or inputs["model"], "--features", inputs["manifest"], "--output", out]
        + ["--ds", DS, "--model-version", "v-ecs", "--shard", str(shard), "--shards", "2"],
        success_uri=out + "._SUCCESS",
    )


def sleeper(store: ObjectStore, name: str) -> JobRequest:
    """A stand-in for a long job: any module runs under the image's ``python3 -m`` entrypoint."""
    return JobRequest(
        job_id=JobId("device_gender__score", "score", f"{name}__{uuid.uuid4().hex[:6]}", 0),
        module="timeit",
        args=["-n", "1", "-r", "1", "print('job: sleeping', flush=True); import time; time.sleep(600)"],
        success_uri=store.uri(f"never/{name}/_SUCCESS"),
    )


def ecs(aws: AwsEndpoint) -> Any:
    return client("ecs", aws)


def describe(aws: AwsEndpoint, arn: str) -> dict[str, Any]:
    return ecs(aws).describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]


def stopped_task_of(aws: AwsEndpoint, request: JobRequest) -> str:
    """The ARN of the one stopped task the job started (ListTasks by startedBy)."""
    listed = ecs(aws).list_tasks(cluster=CLUSTER, startedBy=request.job_id.token, desiredStatus="STOPPED")
    [arn] = listed["taskArns"]
    return arn


def containers_of(docker_client, arn: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ARN}={arn}"})


def running(aws: AwsEndpoint, arn: str) -> bool:
    return describe(aws, arn)["lastStatus"] == "RUNNING"


def new_runs(aws: AwsEndpoint, before: int) -> list[dict[str, Any]]:
    return aws["ecs"].calls("RunTask")[before:]


@pytest.fixture(scope="module")
def trained(aws: AwsEndpoint, store: ObjectStore, inputs: dict[str, str]) -> dict[str, Any]:
    before = len(aws["ecs"].calls("RunTask"))
    request = train_request(inputs)
    result = EcsLauncher(store, config()).run(request)
    return {"request": request, "result": result, "runs": new_runs(aws, before)}


# --- (a) success: the container ran, its lines came back through CloudWatch, the marker decides ----------


def test_train_task_runs_the_job_and_its_log_reaches_the_task_log(
    trained, aws, store: ObjectStore, docker_client
) -> None:
    result, request = trained["result"], trained["request"]
    assert result.reused is False
    assert any(line.startswith("train:") for line in result.log_tail), result.log_tail  # the job's own lines
    for name in ("model.json", "metrics.json", "lineage.json", "_SUCCESS"):
        assert store.exists(f"models/device_gender/v-ecs/{name}"), name
    [run] = trained["runs"]
    assert run["startedBy"] == request.job_id.token and run["taskDefinition"] == "mlbatch-train-device_gender-ec2"
    assert run["overrides"]["containerOverrides"][0]["command"] == [request.module, *request.args]
    arn = stopped_task_of(aws, request)
    task = describe(aws, arn)
    assert (task["stopCode"], task["containers"][0]["exitCode"]) == ("EssentialContainerExited", 0)
    wait_for("the train task's container to be removed", lambda: not containers_of(docker_client, arn))


def test_cloudwatch_lines_are_logged_as_they_arrive(aws, store: ObjectStore, inputs, caplog) -> None:
    request = score_request(store, inputs, f"scheduled__log{RUN}", 1)
    caplog.set_level(logging.INFO, logger="mlbatch.backends.launchers.ecs")
    launcher = EcsLauncher(store, config())
    result = launcher.run(request)
    logged = [r.getMessage() for r in caplog.records if r.name == "mlbatch.backends.launchers.ecs"]
    assert any(m.startswith("[jobs.score] ") and '"rows"' in m for m in logged), logged
    assert any('"rows"' in line for line in result.log_tail)
    arn = stopped_task_of(aws, request)
    stream = f"{LOG_PREFIX}/{CONTAINER}/{arn.rsplit('/', 1)[-1]}"  # awslogs: prefix/container/task id
    events = launcher.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True)["events"]
    assert [e["message"] for e in events][-len(result.log_tail) :] == result.log_tail


def test_a_retry_after_success_launches_nothing(trained, aws: AwsEndpoint, launcher: EcsLauncher) -> None:
    before = len(aws["ecs"].requests)
    assert launcher.run(trained["request"]).reused is True
    assert aws["ecs"].requests[before:] == []  # not even a ListTasks: the marker decides


def test_exit_zero_without_the_marker_fails(aws: AwsEndpoint, store: ObjectStore, launcher: EcsLauncher) -> None:
    request = replace(sleeper(store, "nomarker"), args=["-n", "1", "-r", "1", "print('job: done')"])
    with pytest.raises(JobFailed, match="exited 0 but wrote no marker"):
        launcher.run(request)


# --- (b) failure: the exit code and the job's last lines ------------------------------------------------


def test_failed_job_raises_with_exit_code_and_last_log_lines(store: ObjectStore, inputs, launcher) -> None:
    missing = store.uri("models/device_gender/no-such-version") + "/"
    with pytest.raises(JobFailed) as err:
        launcher.run(score_request(store, inputs, f"scheduled__bad{RUN}", 0, model=missing))
    message = str(err.value)
    assert "container exit code 2" in message and "Essential container in task exited" in message
    assert "| " in message and "no-such-version" in message  # the job's stderr, via CloudWatch


def test_a_placement_failure_is_reported(store: ObjectStore, launcher: EcsLauncher) -> None:
    request = replace(sleeper(store, "gpu"), gpu=1)  # this container instance has no GPU
    with pytest.raises(JobFailed, match=r"ECS RunTask started no task: .*RESOURCE:GPU"):
        launcher.run(request)


def test_an_image_that_cannot_be_pulled_fails_the_task(aws: AwsEndpoint, store: ObjectStore) -> None:
    launcher = EcsLauncher(store, config(score_task_definition="mlbatch-missing"))
    with pytest.raises(
        JobFailed, match=r"TaskFailedToStart: CannotPullContainerError: .*no-such-tag.*the container has no exit code"
    ):
        launcher.run(sleeper(store, "noimage"))


# --- (c) a retry reattaches to the task its first attempt started ----------------------------------------


def test_retry_reattaches_to_the_running_task(trained, aws: AwsEndpoint, store: ObjectStore, inputs) -> None:
    request = score_request(store, inputs, f"scheduled__{RUN}", 0)
    launcher = EcsLauncher(store, config())
    # The first attempt's worker died right after RunTask; its task is still starting or running.
    first = launcher.ecs.run_task(**launcher.run_task_kwargs(request))["tasks"][0]["taskArn"]
    before = len(aws["ecs"].calls("RunTask"))
    result = EcsLauncher(store, config()).run(request)  # the retry, a new worker
    assert result.reused is False and any('"rows"' in line for line in result.log_tail)
    assert new_runs(aws, before) == []  # nothing launched on retry
    assert first in {c["tasks"][0] for c in aws["ecs"].calls("DescribeTasks")}
    assert json.loads(store.get_bytes(store.key(request.success_uri)))["rows"] == N // 2


# --- (d) stop: StopTask ends the container ----------------------------------------------------------------


def test_stop_ends_the_container_and_the_task_says_why(aws, store: ObjectStore, launcher, docker_client) -> None:
    request = sleeper(store, "stop")
    arn = launcher.submit(request)
    wait_for("the task to run", lambda: running(aws, arn))
    launcher.kill()  # the operator's on_kill: StopTask for the job it submitted
    wait_for("the task's container to be gone", lambda: not containers_of(docker_client, arn), timeout=60)
    task = describe(aws, arn)
    assert (task["lastStatus"], task["desiredStatus"], task["stopCode"]) == ("STOPPED", "STOPPED", "UserInitiated")
    assert task["stoppedReason"] == stop_reason(request)
    assert task["containers"][0]["exitCode"] == 143  # SIGTERM through the init process, not the SIGKILL fallback
    with pytest.raises(JobFailed, match=r"was stopped \(on_kill\)\); container exit code 143"):
        launcher.wait(request, arn)
    # A retry after a stop starts afresh: the stopped task is not reattached.
    second = EcsLauncher(store, config()).submit(request)
    assert second != arn
    launcher.stop(request, second)


# --- (e) the deferred wait: the trigger in the triggerer's way, then result() ----------------------------


def test_deferred_wait_fires_when_the_task_stops(trained, aws, store: ObjectStore, inputs, launcher, capsys) -> None:
    request = score_request(store, inputs, f"scheduled__{RUN}", 1)
    arn = launcher.submit(request)
    trigger = as_the_triggerer_builds_it(launcher.trigger(request, arn))
    assert type(trigger) is EcsJobDoneTrigger and trigger.stop_reason == stop_reason(request)
    assert (trigger.log_group, trigger.log_stream) == (LOG_GROUP, f"{LOG_PREFIX}/{CONTAINER}/{arn.rsplit('/', 1)[-1]}")
    capsys.readouterr()
    event = asyncio.run(first_event(trigger, timeout=120))
    assert event.payload == {"status": "success", "task_arn": arn, "cluster": CLUSTER}
    assert describe(aws, arn)["lastStatus"] == "STOPPED"
    # CloudWatch lines, forwarded into the task log by the trigger (its structlog logger writes to stdout).
    forwarded = [line for line in capsys.readouterr().out.splitlines() if "EcsJobDoneTrigger" in line]
    assert any('"rows"' in line for line in forwarded), forwarded
    result = launcher.result(request, arn, event.payload)
    assert result.reused is False and any('"rows"' in line for line in result.log_tail)


def test_deferred_wait_on_a_task_that_failed_to_start(aws: AwsEndpoint, store: ObjectStore) -> None:
    launcher = EcsLauncher(store, config(score_task_definition="mlbatch-missing"))
    request = sleeper(store, "deferred-noimage")
    arn = launcher.submit(request)
    trigger = as_the_triggerer_builds_it(launcher.trigger(request, arn))
    event = asyncio.run(first_event(trigger, timeout=60))
    assert event.payload["status"] == "success"  # the waiter's only acceptor: lastStatus STOPPED
    with pytest.raises(JobFailed, match=r"TaskFailedToStart: CannotPullContainerError"):
        launcher.result(request, arn, event.payload)


def test_deferred_wait_on_a_task_ecs_does_not_describe(aws: AwsEndpoint, store: ObjectStore, launcher) -> None:
    # A wrong cluster, or a triggerer back later than ECS keeps stopped tasks: DescribeTasks answers
    # MISSING, and the tasks_stopped waiter never matches an empty task list.
    request = sleeper(store, "missing")
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/{uuid.uuid4().hex}"
    trigger = EcsJobDoneTrigger(
        cluster=CLUSTER, task_arn=arn, waiter_delay=1, waiter_max_attempts=5, aws_conn_id="aws_default"
    )
    event = asyncio.run(first_event(trigger, timeout=60))
    assert event.payload["status"] == "error" and "(MISSING)" in event.payload["message"]
    with pytest.raises(JobFailed, match=r"waiting for ECS task .* failed: .*MISSING"):
        launcher.result(request, arn, event.payload)


# --- (f) the trigger's on_kill stops the real container ---------------------------------------------------


def test_trigger_on_kill_stops_the_container(aws: AwsEndpoint, store: ObjectStore, launcher, docker_client) -> None:
    request = sleeper(store, "onkill")
    arn = launcher.submit(request)
    trigger = as_the_triggerer_builds_it(launcher.trigger(request, arn))
    asyncio.run(kill_while_running(trigger, lambda: running(aws, arn)))
    wait_for("the task's container to be gone", lambda: not containers_of(docker_client, arn), timeout=60)
    [stop] = [c for c in aws["ecs"].calls("StopTask") if c["task"] == arn]
    assert stop == {"cluster": CLUSTER, "task": arn, "reason": stop_reason(request)}
    task = describe(aws, arn)
    assert (task["lastStatus"], task["stoppedReason"]) == ("STOPPED", stop_reason(request))


# --- the double answers what ECS answers to a request it cannot run --------------------------------------


def test_the_double_rejects_what_ecs_rejects(aws: AwsEndpoint, launcher: EcsLauncher) -> None:
    from botocore.exceptions import ClientError

    run = launcher.run_task_kwargs(replace(sleeper(launcher.store, "reject"), gpu=0))
    cases = {
        "ClusterNotFoundException": {**run, "cluster": "no-such-cluster"},
        "ClientException": {**run, "taskDefinition": "mlbatch-score:99"},
        "InvalidParameterException": {**run, "networkConfiguration": None},  # awsvpc needs one
    }
    renamed = json.loads(json.dumps(run["overrides"]))
    renamed["containerOverrides"][0]["name"] = "main"  # not the task definition's container
    before = len(aws["ecs"].tasks)
    for code, params in [*cases.items(), ("InvalidParameterException", {**run, "overrides": renamed})]:
        with pytest.raises(ClientError) as err:
            ecs(aws).run_task(**{k: v for k, v in params.items() if v is not None})
        assert err.value.response["Error"]["Code"] == code, params
    assert len(aws["ecs"].tasks) == before  # nothing was started
