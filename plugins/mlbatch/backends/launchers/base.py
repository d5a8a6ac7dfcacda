"""The launcher contract, shared by every backend.

A job is identified by (dag_id, task_id, run_id, map_index) and writes a success marker last,
into its own output prefix. A launcher first looks for that marker (done: do not launch again),
then for a running job with that id (reattach), and only then launches. Killing the Airflow
task stops the job; a failed job's last log lines go into the raised error.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from jobs.cpus import VCPU_ENV
from mlbatch.backends.store import ObjectStore
from mlbatch.errors import StageFailed
from mlbatch.redaction import SECRET_NAME, redact

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class JobId:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    @property
    def token(self) -> str:
        """A short, stable name for the job (container names, ECS startedBy: max 36 chars)."""
        digest = hashlib.sha256(repr(self).encode()).hexdigest()[:10]
        head = re.sub(r"[^a-z0-9-]", "-", self.task_id.lower())[:22].strip("-")
        return f"mlb-{head}-{digest}"


@dataclass(frozen=True)
class JobRequest:
    job_id: JobId
    module: str  # "jobs.train" or "jobs.score": run as `python -m MODULE ARGS...`
    args: list[str]
    success_uri: str  # the marker the job writes last
    gpu: int = 0
    vcpu: float = 1
    memory_gib: float = 2
    env: dict[str, str] = field(default_factory=dict)  # never secrets: they come from the task role
    # Jobs of this task that run at once (a mapped task's shards): on one host (the local and
    # Docker launchers) they share its cores; an ECS task has vCPUs of its own.
    side_by_side: int = 1
    model: str = ""  # the spec's name: ECS runs each model's own task-definition family

    def environment(self) -> dict[str, str]:
        """What every launcher puts in the job's environment: ``env`` and the CPUs it was given.

        ``MLBATCH_JOB_VCPU`` sizes the job's thread pools (``jobs.cpus.cores``): an
        ECS task on an EC2 host, or a local process, sees every core of the host, and a pool
        sized to them oversubscribes the CPUs the job was given.
        """
        return {**self.env, VCPU_ENV: f"{self.vcpu:g}"}

    def sharing(self, host_cpus: float) -> JobRequest:
        """This request with its vCPUs capped at its share of a host it shares with the jobs
        running beside it (at least 1): two shards of 4 vCPU on a 2-core machine get 1 each,
        instead of 2 thread pools of 2 on 2 cores (predict about 1.35x slower that way)."""
        share = max(1.0, host_cpus / max(1, self.side_by_side))
        return self if self.vcpu <= share else replace(self, vcpu=share)


@dataclass(frozen=True)
class JobResult:
    job_id: JobId
    reused: bool  # True: the marker was already there, nothing ran
    log_tail: list[str]


class JobFailed(StageFailed, RuntimeError):
    def __init__(self, request: JobRequest, reason: str, log_tail: list[str]):
        self.request = request
        # A job's own output may echo a URL with credentials: the error text goes to logs and alerts.
        self.log_tail = [redact(line) for line in log_tail]
        tail = "\n".join(f"    | {line}" for line in self.log_tail) or "    | (no output)"
        super().__init__(f"job {request.module} ({request.job_id.token}) failed: {reason}\n  last log lines:\n{tail}")


class Launcher(ABC):
    """Runs jobs on one backend. The phases are public so that an Airflow operator can defer the
    wait to the triggerer (:meth:`trigger`) and stop the job from ``on_kill`` (:meth:`stop`):

    - :meth:`submit`: the marker first (present: ``None``, nothing to run), then reattach to a
      running job with this id, else launch; returns the backend's handle of the job (a string);
    - :meth:`wait`: block until it ends, streaming its output into the task log; exit 0 *and*
      marker is success, else :class:`JobFailed` with the last log lines;
    - :meth:`trigger`: an Airflow trigger that waits in the triggerer instead (``None``: this
      backend waits in the worker), then :meth:`result` checks how it ended;
    - :meth:`stop`: stop the job, within a few seconds (the task supervisor sends SIGKILL 5 s
      after SIGTERM). A retry after a stop starts fresh; a retry after a worker crash, where no
      stop ran, reattaches to the job still running.
    """

    def __init__(self, store: ObjectStore):
        self.store = store
        self._current: tuple[JobRequest, str] | None = None

    def run(self, request: JobRequest) -> JobResult:
        """Submit and wait: the synchronous path."""
        handle = self.submit(request)
        if handle is None:
            return JobResult(request.job_id, reused=True, log_tail=["success marker found; not launched"])
        return self.wait(request, handle)

    def submit(self, request: JobRequest) -> str | None:
        if self._marker_exists(request):
            log.info("%s: success marker %s found; not launching", request.job_id.token, request.success_uri)
            return None
        handle = self._reattach_or_launch(request)
        self._current = (request, handle)
        return handle

    def _marker_exists(self, request: JobRequest) -> bool:
        return self.store.exists(self.store.key(request.success_uri))

    @abstractmethod
    def _reattach_or_launch(self, request: JobRequest) -> str:
        """The handle of a running job with this request's id, else of a newly launched one."""

    @abstractmethod
    def wait(self, request: JobRequest, handle: str) -> JobResult: ...

    def trigger(self, request: JobRequest, handle: str) -> BaseTrigger | None:
        """An Airflow trigger that fires when the job has stopped; None: wait in the worker."""
        return None

    def result(self, request: JobRequest, handle: str, event: dict[str, Any] | None) -> JobResult:
        """How a job that a trigger watched ended (exit code, marker, last log lines)."""
        raise NotImplementedError(f"{type(self).__name__} does not defer; its wait() returns the result")

    @abstractmethod
    def stop(self, request: JobRequest, handle: str) -> None: ...

    def kill(self) -> None:
        """Stop the job this launcher last submitted (Airflow's on_kill)."""
        if self._current is not None:
            self.stop(*self._current)


def tail_buffer() -> deque[str]:
    return deque(maxlen=LOG_TAIL_LINES)


# Names that say "credential" (mlbatch.redaction.SECRET_NAME): such a value must never travel in a
# job's environment (it would sit in ECS task descriptions, `docker inspect` and logs); jobs get
# credentials from their task role.


def refuse_secrets(request: JobRequest, env: dict[str, str], allowed: frozenset[str] = frozenset()) -> None:
    """Raise ValueError when ``env`` names a credential that is not explicitly ``allowed``."""
    bad = sorted(k for k in env if SECRET_NAME.search(k) and k not in allowed)
    if bad:
        raise ValueError(
            f"job {request.module} ({request.job_id.token}): environment variables {bad} look like credentials; "
            "jobs get credentials from their task role, never from the environment passed to them"
        )
