"""Run a job as a local process: the embedded stack's launcher.

The same ``python -m jobs.train ...`` command line the container runs, as a child process of
the worker in a process group of its own. Its output goes to a log file that the launcher
follows into the task log, and ``<jobs dir>/<token>.json`` records its pid, so that:

- a retry after a worker crash (no ``on_kill`` ran, the job lives on, re-parented) finds the
  process by that file, checks it is really this job (its environment carries the job's token,
  so a recycled pid is never mistaken for it) and reattaches: it follows the same log file and
  waits for the process to end; the exit code of a process that is not our child is unknown,
  so its success marker alone decides;
- ``stop()`` (Airflow's ``on_kill``) sends SIGTERM to the whole group, then SIGKILL to what is
  left after :data:`STOP_GRACE_S`; the retry then starts fresh.

The jobs dir is local to the machine (``$MLBATCH_HOME/jobs``): on a distributed executor a retry
that lands on another machine cannot see the process; use the Docker or ECS launcher there.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.cpus import cores
from mlbatch.backends.launchers.base import JobFailed, JobRequest, JobResult, Launcher, tail_buffer
from mlbatch.backends.store import ObjectStore
from mlbatch.spec import REPO_ROOT

log = logging.getLogger(__name__)

JOB_ENV = "MLBATCH_LOCAL_JOB"  # the job token, in its environment: proves a pid is this job
STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL: the supervisor kills on_kill itself 5 s after SIGTERM
POLL_S = 0.25


class LocalProcessLauncher(Launcher):
    def __init__(self, store: ObjectStore, jobs_dir: Path):
        super().__init__(store)
        self.jobs_dir = jobs_dir
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _state_file(self, token: str) -> Path:
        return self.jobs_dir / f"{token}.json"

    def _reattach_or_launch(self, request: JobRequest) -> str:
        token = request.job_id.token
        pid = self._running_pid(token)
        if pid is not None:
            log.info(
                "reattaching to local process %d of %s (%s) left by an earlier attempt", pid, token, request.module
            )
            return token
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.jobs_dir / f"{token}.log"
        cmd = [sys.executable, "-m", request.module, *request.args]
        # The job's thread pools fit its share of this machine (its siblings run here too).
        job_env = request.sharing(cores()).environment()
        env = {**os.environ, **job_env, "PYTHONUNBUFFERED": "1", JOB_ENV: token}
        # The job runs the checkout's jobs/, not an image: the worker's own image and code version
        # (set in the Airflow image) would be a false claim in its lineage.json.
        for own in ("MLBATCH_IMAGE", "MLBATCH_CODE_VERSION"):
            env.pop(own, None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        log.info("launching %s as a local process (%s)", request.module, token)
        with logfile.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() takes its children too
            )
        self._children[proc.pid] = proc
        self._state_file(token).write_text(json.dumps({"pid": proc.pid, "log": str(logfile), "module": request.module}))
        return token

    def _running_pid(self, token: str) -> int | None:
        """The pid of this job's process if one is alive (and provably this job's), else None."""
        try:
            pid = int(json.loads(self._state_file(token).read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        if pid in self._children:
            return pid if self._children[pid].poll() is None else None
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return None  # gone (or not ours to read)
        return pid if f"{JOB_ENV}={token}".encode() in environ.split(b"\0") else None

    def wait(self, request: JobRequest, handle: str) -> JobResult:
        state = json.loads(self._state_file(handle).read_text())
        pid, logfile = int(state["pid"]), Path(state["log"])
        tail = tail_buffer()
        child = self._children.get(pid)
        with logfile.open("rb") as f:
            while True:
                alive = child.poll() is None if child is not None else self._running_pid(handle) == pid
                for raw in f.readlines():
                    line = raw.decode(errors="replace").rstrip("\n")
                    tail.append(line)
                    log.info("[%s] %s", request.module, line)
                if not alive:
                    for raw in f.readlines():  # written between the last read and the exit
                        line = raw.decode(errors="replace").rstrip("\n")
                        tail.append(line)
                        log.info("[%s] %s", request.module, line)
                    break
                time.sleep(POLL_S)
        self._current = None
        code = child.wait() if child is not None else None
        self._children.pop(pid, None)
        if code is not None and code != 0:
            why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise JobFailed(request, why, list(tail))
        if not self._marker_exists(request):
            ended = "exited 0" if code == 0 else "ended (it was launched by an earlier attempt: exit code unknown)"
            raise JobFailed(request, f"{ended} but wrote no success marker {request.success_uri}", list(tail))
        self._state_file(handle).unlink(missing_ok=True)
        return JobResult(request.job_id, reused=False, log_tail=list(tail))

    def stop(self, request: JobRequest, handle: str) -> None:
        pid = self._running_pid(handle)
        if pid is None:
            return
        log.info("stopping local process group %d of %s (SIGTERM)", pid, handle)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if self._running_pid(handle) is None:
                return
            time.sleep(0.1)
        log.warning("local process group %d of %s ignored SIGTERM for %.0f s: SIGKILL", pid, handle, STOP_GRACE_S)
        _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the job leads its own group (start_new_session)
    except ProcessLookupError:
        pass
