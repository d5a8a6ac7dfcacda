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

from typing import Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger


class EcsJobDoneTrigger(TaskDoneTrigger):
    """``TaskDoneTrigger`` + StopTask on kill, with a reason naming the Airflow task."""

    def __init__(self, *args: Any, stop_reason: str = "mlbatch: Airflow task stopped (on_kill)", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stop_reason = stop_reason

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {**kwargs, "stop_reason": self.stop_reason}

    async def on_kill(self) -> None:
        self.log.info("Stopping ECS task %s: %s", self.task_arn, self.stop_reason)
        try:
            hook = EcsHook(
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                config=self.botocore_config,
            )
            async with await hook.get_async_conn() as client:
                await client.stop_task(cluster=self.cluster, task=self.task_arn, reason=self.stop_reason)
        except Exception:
            # The task may have stopped on its own meanwhile; the log says what could not be done.
            self.log.exception("Could not stop ECS task %s; it may still be running", self.task_arn)
