"""The ``awslogs`` log driver of the ECS double: a container's output into CloudWatch Logs (moto).

ECS's awslogs driver writes each container's stdout and stderr to the task definition's
``awslogs-group``, stream ``<awslogs-stream-prefix>/<container name>/<task id>``; the group must
exist unless ``awslogs-create-group`` is ``"true"`` (else the task fails to start). The double
does the same over the wire: a boto3 ``logs`` client pointed at the endpoint the double is served
from, fed by :meth:`AwsLogsPump.pump` while the container runs (it returns once the container has
exited and its output is drained, so a task reported STOPPED has all its lines in CloudWatch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


class LogSetupError(Exception):
    """The log configuration cannot be honoured: the task fails to start, as on ECS."""


def awslogs_target(definition: dict[str, Any], task_id: str, region: str) -> tuple[str, str, str, bool] | None:
    """(region, group, stream, create_group) for a container definition of the awslogs driver, else None."""
    config = definition.get("logConfiguration") or {}
    if config.get("logDriver") != "awslogs":
        return None
    options = config.get("options") or {}
    group = options.get("awslogs-group")
    if not group:
        raise LogSetupError("failed to validate logger args: awslogs-group is required for the awslogs log driver")
    prefix = options.get("awslogs-stream-prefix")
    # Without a prefix, ECS on EC2 names the stream by the Docker container id; the double by the task id.
    stream = f"{prefix}/{definition['name']}/{task_id}" if prefix else task_id
    create = str(options.get("awslogs-create-group", "false")).lower() == "true"
    return options.get("awslogs-region") or region, group, stream, create


class AwsLogsPump:
    """One container's lines into one CloudWatch stream (created here; the group when asked)."""

    def __init__(self, client: Any, group: str, stream: str):
        self.client, self.group, self.stream = client, group, stream
        self.lines = 0

    def open(self, create_group: bool) -> AwsLogsPump:
        groups = self.client.describe_log_groups(logGroupNamePrefix=self.group).get("logGroups", [])
        if not any(g["logGroupName"] == self.group for g in groups):
            if not create_group:
                raise LogSetupError(
                    f"failed to validate logger args: The specified log group does not exist: {self.group} "
                    "(create it, or set awslogs-create-group to true in the task definition)"
                )
            try:
                self.client.create_log_group(logGroupName=self.group)
            except self.client.exceptions.ResourceAlreadyExistsException:
                pass  # another task of the same definition created it meanwhile
        self.client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        return self

    def pump(self, chunks: Iterable[bytes]) -> None:
        """Forward ``chunks`` (Docker's log stream, followed) line by line until it ends."""
        partial = b""
        for chunk in chunks:
            *lines, partial = (partial + chunk).split(b"\n")
            self._put(lines)
        self._put([partial] if partial else [])

    def _put(self, lines: list[bytes]) -> None:
        if not lines:
            return
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line.decode(errors="replace").rstrip("\r")} for line in lines]
        try:
            self.client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=events)
            self.lines += len(events)
        except Exception:  # noqa: BLE001 - a lost batch must not stop the task's lifecycle: say so, go on
            log.exception("ECS double: %d lines for %s/%s were lost", len(events), self.group, self.stream)
