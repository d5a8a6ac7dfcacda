"""The local process launcher: reattach after a worker crash, stop on kill, fresh after a stop.

The job is tests/support/fake_job.py run as a module (it logs two steps, sleeps, writes
its success marker), as real child processes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from mlbatch.backends.launchers import JobFailed, JobId, JobRequest
from mlbatch.backends.launchers.local import LocalProcessLauncher
from mlbatch.backends.store import ObjectStore


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore((tmp_path / "objects").as_uri())


def request(tmp_path: Path, store: ObjectStore, sleep: float) -> JobRequest:
    marker = tmp_path / "objects" / "models" / "m" / "v1" / "_SUCCESS"
    return JobRequest(
        job_id=JobId("device_gender__train", "train", "manual__local"),
        module="tests.support.fake_job",
        args=["--marker", str(marker), "--sleep", str(sleep)],
        success_uri=store.uri("models/m/v1/_SUCCESS"),
    )


def _pid(jobs: Path, req: JobRequest) -> int:
    return json.loads((jobs / f"{req.job_id.token}.json").read_text())["pid"]


def _alive(pid: int) -> bool:
    try:
        return b"MLBATCH_LOCAL_JOB=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_a_retry_after_a_worker_crash_reattaches_to_the_running_job(tmp_path, store) -> None:
    jobs = tmp_path / "jobs"
    req = request(tmp_path, store, sleep=3)
    first = LocalProcessLauncher(store, jobs)
    handle = first.submit(req)
    pid = _pid(jobs, req)
    # The worker died here: no wait, no on_kill. The retry is a new process with a new launcher.
    retry = LocalProcessLauncher(store, jobs)
    assert retry.submit(req) == handle
    # Reattached: nothing launched (else the first job's output says why it ended early).
    assert _pid(jobs, req) == pid, (jobs / f"{req.job_id.token}.log").read_text()
    result = retry.wait(req, handle)
    assert result.reused is False
    assert "job: step 2 of 2" in result.log_tail  # the output it wrote before and after the reattach
    assert retry.submit(req) is None  # done: the marker decides, nothing runs again
    first._children[pid].wait(timeout=10)  # reap the test's own child


def test_stop_ends_the_process_group_and_the_retry_starts_fresh(tmp_path, store) -> None:
    jobs = tmp_path / "jobs"
    req = request(tmp_path, store, sleep=120)
    launcher = LocalProcessLauncher(store, jobs)
    handle = launcher.submit(req)
    pid = _pid(jobs, req)
    started = time.monotonic()
    launcher.kill()  # on_kill
    assert time.monotonic() - started < 5  # within the supervisor's 5 s before its SIGKILL
    with pytest.raises(JobFailed, match="killed by signal 15"):
        launcher.wait(req, handle)
    assert not _alive(pid)
    again = LocalProcessLauncher(store, jobs)
    again.submit(req)
    assert _pid(jobs, req) != pid  # a stopped job is not reattached: a fresh one runs
    again.kill()


def test_a_recycled_pid_is_never_taken_for_the_job(tmp_path, store) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    req = request(tmp_path, store, sleep=0)
    # An earlier attempt's pid now belongs to another process (here: the test itself).
    (jobs / f"{req.job_id.token}.json").write_text(json.dumps({"pid": os.getpid(), "log": str(jobs / "x.log")}))
    launcher = LocalProcessLauncher(store, jobs)
    handle = launcher.submit(req)
    assert _pid(jobs, req) != os.getpid()
    assert launcher.wait(req, handle).reused is False


@pytest.mark.parametrize(("vcpu", "side_by_side"), [(4, 2), (4, 1), (1, 1)])
def test_jobs_side_by_side_size_their_pools_to_their_share_of_the_machine(tmp_path, store, vcpu, side_by_side) -> None:
    """A score shard of 4 vCPU beside another on this machine sizes its pools to half of it."""
    host = len(os.sched_getaffinity(0))
    req = replace(request(tmp_path, store, 0), vcpu=vcpu, side_by_side=side_by_side)
    result = LocalProcessLauncher(store, tmp_path / "jobs").run(req)
    expected = max(1, int(min(vcpu, max(1.0, host / side_by_side))))
    assert f"job: {expected} threads" in result.log_tail
