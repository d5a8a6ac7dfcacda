"""The Docker launcher's container arguments, against a client that only answers ``info()``
(the containers themselves run in tests/integration/launchers/test_docker_jobs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbatch.launchers import JobId, JobRequest
from mlbatch.launchers.docker import DockerConfig, DockerLauncher
from mlbatch.store import ObjectStore


class TwoCoreHost:
    def info(self) -> dict[str, Any]:
        return {"NCPU": 2}


def _request(vcpu: float) -> JobRequest:
    return JobRequest(
        job_id=JobId("device_gender__score", "score", "manual__x", 0),
        module="jobs.score",
        args=[],
        success_uri="s3://b/p/_SUCCESS",
        vcpu=vcpu,
        memory_gib=2,
    )


def test_a_job_sized_for_ecs_is_capped_at_the_host_s_cpus(tmp_path: Path) -> None:
    launcher = DockerLauncher(ObjectStore("s3://b/p"), DockerConfig(), client=TwoCoreHost())  # type: ignore[arg-type]
    assert launcher.run_kwargs(_request(4))["nano_cpus"] == 2_000_000_000  # Docker refuses more than the host has
    assert launcher.run_kwargs(_request(0.5))["nano_cpus"] == 500_000_000
