"""Triggers that wait in Airflow's triggerer for work mlbatch started outside the worker.

Redshift statements use the amazon provider's ``RedshiftDataTrigger`` as it is (it cancels the
statement in ``on_kill``). ECS jobs use the provider's ``TaskDoneTrigger`` (the ``tasks_stopped``
waiter, CloudWatch lines forwarded into the task log), which has no ``on_kill`` in the pinned
provider: :class:`EcsJobDoneTrigger` adds one, so that marking a deferred job task failed (or
clearing it) stops the GPU task instead of leaving it running. The triggerer calls ``on_kill``
only on such a user action, never on its own restart, a redistribution or a timeout.

Imported by the triggerer from its serialised classpath; nothing heavy at the top.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger
from airflow.triggers.base import TriggerEvent


class EcsJobDoneTrigger(TaskDoneTrigger):
    """``TaskDoneTrigger`` + StopTask on kill, with a reason naming the Airflow task."""

    def __init__(self, *args: Any, stop_reason: str = "mlbatch: Airflow task stopped (on_kill)", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stop_reason = stop_reason

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {**kwargs, "stop_reason": self.stop_reason}

    def _hook(self) -> EcsHook:
        return EcsHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify, config=self.botocore_config
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The provider's wait, plus an answer for a task ECS does not describe: DescribeTasks then
        returns no task (``failures``: MISSING) and the provider's loop fails on ``tasks[0]`` with a
        bare IndexError. It happens with a wrong cluster, or when the triggerer comes back later than
        ECS keeps stopped tasks (about an hour): the event says so, and the task fails naming it."""
        try:
            async for event in super().run():
                yield event
        except IndexError:
            # The amazon provider leaves get_async_conn (an aiobotocore client) and TriggerEvent unannotated.
            async with await self._hook().get_async_conn() as client:  # type: ignore[no-untyped-call]
                response = await client.describe_tasks(cluster=self.cluster, tasks=[self.task_arn])
            if response.get("tasks"):
                raise  # not the missing task: a failure of its own
            reasons = ", ".join(f.get("reason", "?") for f in response.get("failures", [])) or "no task returned"
            yield TriggerEvent(  # type: ignore[no-untyped-call]
                {
                    "status": "error",
                    "task_arn": self.task_arn,
                    "cluster": self.cluster,
                    "message": f"ECS does not describe task {self.task_arn} in cluster {self.cluster} ({reasons}): "
                    "a wrong cluster, or the task stopped longer ago than ECS keeps stopped tasks; "
                    "its outcome is unknown, clear the task to run the job again",
                }
            )

    async def on_kill(self) -> None:
        self.log.info("Stopping ECS task %s: %s", self.task_arn, self.stop_reason)
        try:
            async with await self._hook().get_async_conn() as client:  # type: ignore[no-untyped-call]
                await client.stop_task(cluster=self.cluster, task=self.task_arn, reason=self.stop_reason)
        except Exception:
            # The task may have stopped on its own meanwhile; the log says what could not be done.
            self.log.exception("Could not stop ECS task %s; it may still be running", self.task_arn)
