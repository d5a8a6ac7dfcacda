"""The launcher contract, shared by every backend.

A job is identified by (dag_id, task_id, run_id, map_index) and writes a success marker last,
into its own output prefix. A launcher first looks for that marker (done: do not launch again),
then for a running job with that id (reattach), and only then launches. Killing the Airflow
task stops the job; a failed job's last log lines go into the raised error.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from mlbatch.store import ObjectStore

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


@dataclass(frozen=True)
class JobResult:
    job_id: JobId
    reused: bool  # True: the marker was already there, nothing ran
    log_tail: list[str]


class JobFailed(RuntimeError):
    def __init__(self, request: JobRequest, reason: str, log_tail: list[str]):
        self.request = request
        self.log_tail = log_tail
        tail = "\n".join(f"    | {line}" for line in log_tail) or "    | (no output)"
        super().__init__(f"job {request.module} ({request.job_id.token}) failed: {reason}\n  last log lines:\n{tail}")


class Launcher(ABC):
    def __init__(self, store: ObjectStore):
        self.store = store

    def run(self, request: JobRequest) -> JobResult:
        if self._marker_exists(request):
            return JobResult(request.job_id, reused=True, log_tail=["success marker found; not launched"])
        return self._launch_and_wait(request)

    def _marker_exists(self, request: JobRequest) -> bool:
        return self.store.exists(self.store.key(request.success_uri))

    @abstractmethod
    def _launch_and_wait(self, request: JobRequest) -> JobResult: ...

    def kill(self) -> None:  # noqa: B027 - optional for launchers that run nothing locally
        """Stop the job this launcher is waiting on (Airflow's on_kill)."""


def tail_buffer() -> deque[str]:
    return deque(maxlen=LOG_TAIL_LINES)


# Names that say "credential": such a value must never travel in a job's environment (it would sit
# in ECS task descriptions, `docker inspect` and logs); jobs get credentials from their task role.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY|API_KEY", re.IGNORECASE)


def refuse_secrets(request: JobRequest, env: dict[str, str], allowed: frozenset[str] = frozenset()) -> None:
    """Raise ValueError when ``env`` names a credential that is not explicitly ``allowed``."""
    bad = sorted(k for k in env if SECRET_NAME.search(k) and k not in allowed)
    if bad:
        raise ValueError(
            f"job {request.module} ({request.job_id.token}): environment variables {bad} look like credentials; "
            "jobs get credentials from their task role, never from the environment passed to them"
        )
