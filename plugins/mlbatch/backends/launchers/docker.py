"""Run a job as a Docker container: the launcher for tests and development machines.

The container is named by the job's token (``JobId.token``) and labelled with its dag_id,
task_id, run_id and map_index, so a retry finds it by name:

- success marker present: nothing runs (checked by :meth:`Launcher.run`);
- a container with the job's name is running: reattach, stream its logs, wait for it;
- it has exited: exit code 0 with the marker written means done; anything else is removed and
  the job launched again;
- no container: ``docker run`` the train or score image with ``[module, *args]`` (the images'
  entrypoint is ``python3 -m``).

Containers that succeed are removed (the marker is the record); failed ones are kept for
``docker logs`` until the retry removes them. Credentials are never passed unless named in
``MLBATCH_DOCKER_PASS_ENV`` (tests pass moto's dummy keys that way).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from docker.errors import APIError, NotFound
from docker.types import DeviceRequest

from mlbatch.backends.launchers.base import JobFailed, JobRequest, JobResult, Launcher, refuse_secrets, tail_buffer
from mlbatch.backends.store import ObjectStore

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

log = logging.getLogger(__name__)

# Copied from the worker's environment when set: where S3 is and which region. Not credentials.
DEFAULT_PASS_ENV = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLBATCH_XGB_DEVICE")
LABEL_PREFIX = "io.mlbatch."
# SIGTERM, then SIGKILL: the jobs write their marker last, so a kill leaves no half result, and the
# task supervisor SIGKILLs on_kill itself 5 s after its SIGTERM.
STOP_GRACE_S = 3.0


@dataclass(frozen=True)
class DockerConfig:
    train_image: str = "mlbatch/train:latest"
    score_image: str = "mlbatch/score:latest"
    network: str | None = None  # "host" reaches servers on the worker's 127.0.0.1 (tests)
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV
    extra_pass_env: tuple[str, ...] = ()  # explicit opt-in, credentials allowed (test servers only)
    base_url: str | None = None  # default: DOCKER_HOST
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DockerConfig:
        e = os.environ if environ is None else environ
        extra = tuple(n.strip() for n in e.get("MLBATCH_DOCKER_PASS_ENV", "").split(",") if n.strip())
        return cls(
            train_image=e.get("MLBATCH_TRAIN_IMAGE") or cls.train_image,
            score_image=e.get("MLBATCH_SCORE_IMAGE") or cls.score_image,
            network=e.get("MLBATCH_DOCKER_NETWORK") or None,
            extra_pass_env=extra,
            base_url=e.get("DOCKER_HOST") or None,
        )

    def image_for(self, module: str) -> str:
        return self.train_image if module == "jobs.train" else self.score_image


class DockerLauncher(Launcher):
    def __init__(self, store: ObjectStore, config: DockerConfig | None = None, client: DockerClient | None = None):
        super().__init__(store)
        self.config = config or DockerConfig.from_env()
        self._client = client
        self._host_cpus: float | None = None

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = (
                docker.DockerClient(base_url=self.config.base_url) if self.config.base_url else docker.from_env()
            )
        return self._client

    def _reattach_or_launch(self, request: JobRequest) -> str:
        container = self._existing(request)
        if container is None:
            container = self._start(request)
        else:
            log.info("reattaching to running container %s (%s)", container.name, request.module)
        name = container.name
        assert name is not None  # Docker names every container (ours: the job id's token)
        return name

    def _existing(self, request: JobRequest) -> Container | None:
        """The job's container if it is still running; an exited one is dealt with and dropped."""

        name = request.job_id.token
        try:
            container = self.client.containers.get(name)
        except NotFound:
            return None
        state = container.attrs["State"]
        if state.get("Running") or state.get("Restarting"):
            return container
        code = state.get("ExitCode")
        if state.get("Status") == "exited" and code == 0 and self._marker_exists(request):
            return container  # finished between the marker check and now: _wait returns at once
        log.info(
            "removing container %s left by an earlier attempt (status %s, exit code %s); launching again",
            name,
            state.get("Status"),
            code,
        )
        container.remove(force=True)
        return None

    def environment(self, request: JobRequest) -> dict[str, str]:
        refuse_secrets(request, request.env)
        passed = {n: os.environ[n] for n in (*self.config.pass_env, *self.config.extra_pass_env) if n in os.environ}
        refuse_secrets(request, passed, allowed=frozenset(self.config.extra_pass_env))
        return {**passed, **request.environment(), "PYTHONUNBUFFERED": "1"}

    def run_kwargs(self, request: JobRequest) -> dict[str, Any]:
        """The ``containers.run`` arguments for a request (public for tests and debugging)."""
        jid = request.job_id
        cpus = self._cpus(request)
        kwargs: dict[str, Any] = {
            "image": self.config.image_for(request.module),
            "command": [request.module, *request.args],
            "name": jid.token,
            "labels": {
                **self.config.labels,
                f"{LABEL_PREFIX}dag_id": jid.dag_id,
                f"{LABEL_PREFIX}task_id": jid.task_id,
                f"{LABEL_PREFIX}run_id": jid.run_id,
                f"{LABEL_PREFIX}map_index": str(jid.map_index),
            },
            "environment": self.environment(replace(request, vcpu=cpus)),
            "detach": True,
            # An init as PID 1 forwards SIGTERM: python as PID 1 ignores it, and `stop` would end
            # in SIGKILL after the timeout (on ECS: linuxParameters.initProcessEnabled).
            "init": True,
            "nano_cpus": int(cpus * 1e9),
            "mem_limit": f"{int(request.memory_gib * 1024)}m",
        }
        if self.config.network:
            kwargs["network_mode"] = self.config.network
        if request.gpu > 0:
            kwargs["device_requests"] = [DeviceRequest(count=request.gpu, capabilities=[["gpu"]])]
        if self.store.is_local:
            # A file:// store is a folder on this machine: mount it at the same path, and write as
            # this user so the worker can read (and later clean) what the job wrote.
            root = self.store.root.removeprefix("file://")
            Path(root).mkdir(parents=True, exist_ok=True)
            kwargs["volumes"] = {root: {"bind": root, "mode": "rw"}}
            kwargs["user"] = f"{os.getuid()}:{os.getgid()}"
        return kwargs

    def _cpus(self, request: JobRequest) -> float:
        """The job's vCPUs, capped at its share of the Docker host's (the jobs beside it, a
        mapped task's shards, run on it too): Docker refuses a container that asks for more
        CPUs than the host has, and a spec sized for ECS (e.g. 4 vCPU) must still run on a
        2-core development machine."""
        if self._host_cpus is None:
            self._host_cpus = float(self.client.info().get("NCPU") or request.vcpu)
        shared = request.sharing(self._host_cpus)
        if shared.vcpu < request.vcpu:
            log.warning(
                "%s asks for %g vCPU; its share of this Docker host (%g CPUs, %d jobs side by side) is %g",
                request.job_id.token,
                request.vcpu,
                self._host_cpus,
                request.side_by_side,
                shared.vcpu,
            )
        return shared.vcpu

    def _start(self, request: JobRequest) -> Container:

        kwargs = self.run_kwargs(request)
        log.info("launching %s in container %s from %s", request.module, kwargs["name"], kwargs["image"])
        try:
            container: Container = self.client.containers.run(**kwargs)  # detach=True: a Container
            return container
        except APIError as exc:
            if exc.status_code == 409:  # another attempt created it just now: wait on that one
                log.info("container %s exists already; reattaching", kwargs["name"])
                return self.client.containers.get(kwargs["name"])
            raise

    def wait(self, request: JobRequest, handle: str) -> JobResult:
        container = self.client.containers.get(handle)
        tail = tail_buffer()
        for line in _lines(container.logs(stream=True, follow=True, stdout=True, stderr=True)):
            tail.append(line)
            log.info("[%s] %s", request.module, line)
        code = container.wait().get("StatusCode")
        container.reload()
        state = container.attrs["State"]
        if code != 0:
            why = " (killed: out of memory)" if state.get("OOMKilled") else ""
            raise JobFailed(request, f"container {container.name} exited with code {code}{why}", list(tail))
        if not self._marker_exists(request):
            raise JobFailed(
                request, f"container {container.name} exited 0 but wrote no marker {request.success_uri}", list(tail)
            )
        container.remove()
        self._current = None
        return JobResult(request.job_id, reused=False, log_tail=list(tail))

    def stop(self, request: JobRequest, handle: str) -> None:
        """SIGTERM now, SIGKILL after STOP_GRACE_S: each call returns at once (``docker stop``
        blocks for its whole timeout, longer than the 5 s the task supervisor allows on_kill).
        The exited container stays for ``docker logs``; the retry removes it and starts fresh."""

        try:
            container = self.client.containers.get(handle)
            if not container.attrs["State"].get("Running"):
                return
            log.info("stopping container %s (SIGTERM)", handle)
            container.kill(signal="SIGTERM")
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline:
                container.reload()
                if not container.attrs["State"].get("Running"):
                    return
                time.sleep(0.2)
            log.warning("container %s ignored SIGTERM for %.0f s: SIGKILL", handle, STOP_GRACE_S)
            container.kill(signal="SIGKILL")
        except (NotFound, APIError) as exc:  # already gone, or stopped in between
            log.info("container %s: nothing to stop (%s)", handle, exc)


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Docker's log stream in whole lines (frames need not end at a newline)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *done, pending = pending.split(b"\n")
        for raw in done:
            yield raw.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace")
