"""One task of the ECS double: its request, its state as DescribeTasks shows it, its container's settings.

State changes come from two threads (the task's lifecycle thread and a StopTask request): each
takes the task's lock, so DescribeTasks never shows STOPPED without the exit code and reason.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.devservers.ecs_double import EcsDouble

ESSENTIAL_EXITED = "Essential container in task exited"


def _now() -> datetime:
    return datetime.now(UTC)


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


@dataclass
class Task:
    arn: str
    id: str
    cluster: str
    owner: str  # the double's id, a container label
    definition: dict[str, Any]
    container_definition: dict[str, Any]
    params: dict[str, Any]  # RunTask's parameters (overrides, startedBy, tags, ...)
    container_arn: str = ""
    last_status: str = "PROVISIONING"
    desired_status: str = "RUNNING"
    stopped_reason: str | None = None
    stop_code: str | None = None
    exit_code: int | None = None
    container_reason: str | None = None
    container_id: str | None = None
    times: dict[str, datetime] = field(default_factory=lambda: {"createdAt": _now()})
    version: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, double: EcsDouble, cluster: str, definition: dict[str, Any], params: dict[str, Any]) -> Task:
        task_id = secrets.token_hex(16)  # ECS's task ids: 32 hex digits
        name = cluster.rsplit("/", 1)[-1]
        return cls(
            arn=f"arn:aws:ecs:{double.region}:{double.account}:task/{name}/{task_id}",
            id=task_id,
            cluster=name,
            owner=double.owner,
            definition=definition,
            container_definition=definition["containerDefinitions"][0],
            params=params,
            container_arn=f"arn:aws:ecs:{double.region}:{double.account}:container/{name}/{task_id}/{secrets.token_hex(16)}",
        )

    # -- what it asks for ------------------------------------------------------------------------

    @property
    def override(self) -> dict[str, Any]:
        overrides = (self.params.get("overrides") or {}).get("containerOverrides", [])
        return next((o for o in overrides if o.get("name") == self.container_definition["name"]), {})

    @property
    def started_by(self) -> str | None:
        return self.params.get("startedBy")

    @property
    def tags(self) -> list[dict[str, str]]:
        return self.params.get("tags", [])

    def container_running(self) -> bool:
        """Its container was started and the task is not STOPPED yet (StopTask may be under way)."""
        with self._lock:
            return self.container_id is not None and self.last_status != "STOPPED"

    @property
    def image(self) -> str:
        return self.container_definition["image"]

    @property
    def stop_timeout(self) -> int:
        return int(self.container_definition.get("stopTimeout") or 30)  # ECS's default: 30 s

    def _task_size(self) -> tuple[int, int]:
        """(CPU units, MiB): the task-level override, else the task definition's, else the container's."""
        overrides, c = self.params.get("overrides") or {}, self.container_definition
        cpu = _int(overrides.get("cpu") or self.definition.get("cpu") or self.override.get("cpu") or c.get("cpu"))
        memory = _int(
            overrides.get("memory")
            or self.definition.get("memory")
            or self.override.get("memory")
            or c.get("memory")
            or c.get("memoryReservation")
        )
        return cpu, memory

    def _gpus(self) -> int:
        requirements = self.override.get("resourceRequirements") or self.container_definition.get(
            "resourceRequirements", []
        )
        return sum(int(r["value"]) for r in requirements if r.get("type") == "GPU")

    def needs(self) -> dict[str, int]:
        cpu, memory = self._task_size()
        return {"CPU": cpu, "MEMORY": memory, "GPU": self._gpus()}

    def environment(self, task_environment: dict[str, str]) -> dict[str, str]:
        """The task role's stand-in, then the container definition's, then RunTask's override (wins)."""
        env = dict(task_environment)
        for source in (self.container_definition.get("environment", []), self.override.get("environment", [])):
            env.update({e["name"]: e["value"] for e in source})
        return env

    def container_kwargs(self, task_environment: dict[str, str]) -> dict[str, Any]:
        """``containers.create`` arguments: the ECS agent's names and labels, the task's limits."""
        c, family = self.container_definition, self.definition["family"]
        cpu, memory = self._task_size()
        kwargs: dict[str, Any] = {
            "image": self.image,
            "name": f"ecs-{family}-{self.definition['revision']}-{c['name']}-{self.id[:12]}",
            "environment": self.environment(task_environment),
            "labels": {
                "com.amazonaws.ecs.task-arn": self.arn,
                "com.amazonaws.ecs.cluster": self.cluster,
                "com.amazonaws.ecs.container-name": c["name"],
                "com.amazonaws.ecs.task-definition-family": family,
                "com.amazonaws.ecs.task-definition-version": str(self.definition["revision"]),
                "io.mlbatch.ecs-double.started-by": self.started_by or "",
                "io.mlbatch.ecs-double.owner": self.owner,
            },
            "network_mode": "host",  # the endpoint is on this host's 127.0.0.1 (awsvpc has no stand-in)
            "init": bool((c.get("linuxParameters") or {}).get("initProcessEnabled")),
            "detach": True,
        }
        command = self.override.get("command") or c.get("command")
        if command:
            kwargs["command"] = command
        if c.get("entryPoint"):
            kwargs["entrypoint"] = c["entryPoint"]
        if cpu:
            kwargs["nano_cpus"] = int(cpu / 1024 * 1e9)  # the task's CPU: a hard limit on Linux
        hard = _int(self.override.get("memory") or c.get("memory")) or memory
        if hard:
            kwargs["mem_limit"] = f"{hard}m"
        if self._gpus():
            from docker.types import DeviceRequest

            kwargs["device_requests"] = [DeviceRequest(count=self._gpus(), capabilities=[["gpu"]])]
        return kwargs

    # -- state -------------------------------------------------------------------------------------

    def set_status(self, status: str) -> None:
        with self._lock:
            if self.last_status != "STOPPED":
                self.last_status, self.version = status, self.version + 1
                self.times.setdefault({"PENDING": "pullStartedAt", "RUNNING": "startedAt"}[status], _now())

    def container_started(self, container_id: str) -> bool:
        """Record the container; False (and the task STOPPED) when StopTask came first."""
        with self._lock:
            if self.desired_status == "STOPPED":
                self._stopped()
                return False
            self.container_id = container_id
            return True

    def request_stop(self, reason: str) -> str | None:
        """StopTask: the container to ``docker stop``, if one runs (else the lifecycle ends the task)."""
        with self._lock:
            if self.last_status == "STOPPED" or self.desired_status == "STOPPED":
                return None  # ECS keeps the first reason
            self.desired_status, self.stopped_reason, self.stop_code = "STOPPED", reason, "UserInitiated"
            self.times["stoppingAt"] = _now()
            self.version += 1
            return self.container_id

    def exited(self, code: int | None, why: str | None = None) -> None:
        with self._lock:
            self.exit_code, self.container_reason = code, why
            self.times["executionStoppedAt"] = _now()
            self._stopped()

    def failed_to_start(self, error: str, message: str) -> None:
        with self._lock:
            if self.last_status == "STOPPED":
                return  # it ended before the failure was seen: the first outcome stands
            self.stopped_reason = self.container_reason = f"{error}: {message}"
            self.stop_code = "TaskFailedToStart"
            self._stopped()

    def _stopped(self) -> None:  # the caller holds the lock
        self.stopped_reason = self.stopped_reason or ESSENTIAL_EXITED
        self.stop_code = self.stop_code or "EssentialContainerExited"
        self.desired_status = "STOPPED"
        self.times["stoppedAt"] = _now()
        self.version += 1
        self.last_status = "STOPPED"

    def describe(self) -> dict[str, Any]:
        """The task as DescribeTasks (and RunTask, StopTask) answer it."""
        cpu, memory = self._task_size()
        with self._lock:
            container: dict[str, Any] = {
                "containerArn": self.container_arn,
                "taskArn": self.arn,
                "name": self.container_definition["name"],
                "image": self.image,
                "lastStatus": self.last_status if self.last_status != "PROVISIONING" else "PENDING",
            }
            if self.container_id:
                container["runtimeId"] = self.container_id
            if self.exit_code is not None:
                container["exitCode"] = self.exit_code
            if self.container_reason:
                container["reason"] = self.container_reason
            task: dict[str, Any] = {
                "taskArn": self.arn,
                "clusterArn": self.arn.split(":task/")[0] + f":cluster/{self.cluster}",
                "taskDefinitionArn": self.definition["taskDefinitionArn"],
                "group": f"family:{self.definition['family']}",
                "lastStatus": self.last_status,
                "desiredStatus": self.desired_status,
                "containers": [container],
                "overrides": self.params.get("overrides") or {"containerOverrides": []},
                "tags": self.tags,
                "version": self.version,
                **self.times,
            }
            for key, value in (
                ("cpu", str(cpu) if cpu else None),
                ("memory", str(memory) if memory else None),
                ("startedBy", self.started_by),
                ("launchType", self.params.get("launchType")),
                (
                    "capacityProviderName",
                    (self.params.get("capacityProviderStrategy") or [{}])[0].get("capacityProvider"),
                ),
                ("stoppedReason", self.stopped_reason if self.desired_status == "STOPPED" else None),
                ("stopCode", self.stop_code if self.desired_status == "STOPPED" else None),
            ):
                if value is not None:
                    task[key] = value
        return task
