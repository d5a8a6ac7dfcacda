"""Run a job as a local process: the embedded stack's launcher.

The same ``python -m jobs.train ...`` command line the container runs, in a child process of
the worker, its output streamed into the task log. A process cannot be re-attached after the
worker dies, so on a retry only the success marker saves work; that is enough locally.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from mlbatch.env import REPO_ROOT
from mlbatch.launchers.base import JobFailed, JobRequest, JobResult, Launcher, tail_buffer

log = logging.getLogger(__name__)


class LocalProcessLauncher(Launcher):
    _proc: subprocess.Popen[str] | None = None

    def _launch_and_wait(self, request: JobRequest) -> JobResult:
        cmd = [sys.executable, "-m", request.module, *request.args]
        env = {**os.environ, **request.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        log.info("launching %s as a local process (%s)", request.module, request.job_id.token)
        tail = tail_buffer()
        self._proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: kill() takes children too
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("[%s] %s", request.module, line)
        code = self._proc.wait()
        self._proc = None
        if code != 0:
            raise JobFailed(request, f"exit code {code}", list(tail))
        if not self._marker_exists(request):
            raise JobFailed(request, f"exited 0 but wrote no success marker {request.success_uri}", list(tail))
        return JobResult(request.job_id, reused=False, log_tail=list(tail))

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
