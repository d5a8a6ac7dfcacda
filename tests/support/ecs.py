"""ECS over the wire for tests: the job task definitions on the ECS double, the Airflow connection
that points the provider's hooks at the endpoint, and a trigger run the way the triggerer runs it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from devtools.devservers.aws_wire import AwsEndpoint, aws_environment

LOG_GROUP = "/mlbatch/jobs"
LOG_PREFIX = "mlbatch"
CONTAINER = "job"


def airflow_aws_connection(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment for Airflow's ``aws_default`` connection at ``endpoint`` (plus boto3's own variables,
    which the test's S3 store and the jobs' pyarrow read)."""
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",  # the doubles accept any keys
        "extra": {"endpoint_url": endpoint, "region_name": region},
    }
    return {**aws_environment(endpoint, region), "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn)}


def client(service: str, endpoint: AwsEndpoint) -> Any:
    """A boto3 client of the test's own at ``endpoint`` (what a test observes goes over the wire too)."""
    import boto3

    env = aws_environment(endpoint.endpoint)
    return boto3.client(
        service,
        endpoint_url=endpoint.endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def register_job_definition(
    endpoint: AwsEndpoint, family: str, image: str, *, stop_timeout: int = 5, network_mode: str = "awsvpc"
) -> str:
    """Register a job task definition as ``mlbatch ecs task-definitions`` renders one (python3 -m entrypoint
    in the image, an init process, awslogs); returns its ARN. ``stop_timeout``: seconds from SIGTERM to SIGKILL."""
    ecs = client("ecs", endpoint)
    container = {
        "name": CONTAINER,
        "image": image,
        "essential": True,
        "command": ["jobs.train", "--help"],  # replaced by every RunTask's override
        "linuxParameters": {"initProcessEnabled": True},
        "stopTimeout": stop_timeout,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": LOG_GROUP,
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": LOG_PREFIX,
                "awslogs-create-group": "true",
            },
        },
    }
    response = ecs.register_task_definition(
        family=family,
        taskRoleArn="arn:aws:iam::123456789012:role/mlbatch-job",
        executionRoleArn="arn:aws:iam::123456789012:role/mlbatch-job-execution",
        networkMode=network_mode,
        requiresCompatibilities=["EC2"],
        cpu="1024",
        memory="2048",
        containerDefinitions=[container],
    )
    return response["taskDefinition"]["taskDefinitionArn"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.2) -> Any:
    """``check()``'s first truthy value; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


# --- the triggerer's way (airflow/jobs/triggerer_job_runner.py) -------------------------------------


def as_the_triggerer_builds_it(trigger: Any) -> Any:
    """A new trigger from ``trigger.serialize()`` through the path the triggerer takes: kwargs encrypted
    for the trigger table, decrypted, smart-decoded, the class imported from its classpath."""
    from airflow._shared.module_loading import import_string
    from airflow.models.trigger import Trigger
    from airflow.serialization.decoders import smart_decode_trigger_kwargs

    classpath, kwargs = trigger.serialize()
    stored = Trigger.encrypt_kwargs(kwargs)
    decoded = {k: smart_decode_trigger_kwargs(v) for k, v in Trigger._decrypt_kwargs(stored).items()}
    return import_string(classpath)(**decoded)


async def first_event(trigger: Any, timeout: float) -> Any:
    """The trigger's first TriggerEvent, as ``TriggerRunner.run_trigger`` iterates ``trigger.run()``."""

    async def run() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError(f"{type(trigger).__name__} ended without an event")

    return await asyncio.wait_for(run(), timeout)


async def kill_while_running(trigger: Any, running: Callable[[], bool], timeout: float = 60) -> None:
    """Run the trigger, then do what the triggerer does when a person marks its task failed: cancel
    the trigger's asyncio task with the user-action message, then await ``on_kill()`` (bounded)."""
    from airflow.jobs.triggerer_job_runner import _ON_CANCEL_TIMEOUT, _USER_ACTION_CANCEL_MSG

    task = asyncio.ensure_future(first_event(trigger, timeout))
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(running):
        if task.done() or time.monotonic() > deadline:
            task.cancel()
            pytest.fail(f"the job never ran while {type(trigger).__name__} waited ({task})")
        await asyncio.sleep(0.2)
    task.cancel(_USER_ACTION_CANCEL_MSG)
    try:
        await task
    except asyncio.CancelledError:
        pass
    await asyncio.wait_for(trigger.on_kill(), timeout=_ON_CANCEL_TIMEOUT)
