"""The Docker launcher's container arguments, against a client that only answers ``info()``
(the containers themselves run in tests/integration/launchers/test_docker_jobs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbatch.backends.launchers import JobId, JobRequest
from mlbatch.backends.launchers.docker import DockerConfig, DockerLauncher
from mlbatch.backends.store import ObjectStore


class TwoCoreHost:
    def info(self) -> dict[str, Any]:
        return {"NCPU": 2}


def _request(vcpu: float, side_by_side: int = 1) -> JobRequest:
    return JobRequest(
        job_id=JobId("device_gender__score", "score", "manual__x", 0),
        module="jobs.score",
        args=[],
        success_uri="s3://b/p/_SUCCESS",
        vcpu=vcpu,
        memory_gib=2,
        side_by_side=side_by_side,
    )


def test_a_job_sized_for_ecs_is_capped_at_the_host_s_cpus(tmp_path: Path) -> None:
    launcher = DockerLauncher(ObjectStore("s3://b/p"), DockerConfig(), client=TwoCoreHost())  # type: ignore[arg-type]
    assert launcher.run_kwargs(_request(4))["nano_cpus"] == 2_000_000_000  # Docker refuses more than the host has
    assert launcher.run_kwargs(_request(0.5))["nano_cpus"] == 500_000_000


def test_shards_side_by_side_share_the_host_s_cpus(tmp_path: Path) -> None:
    """Two shards of 4 vCPU on a 2-CPU host get 1 CPU each, and their jobs are told so."""
    launcher = DockerLauncher(ObjectStore("s3://b/p"), DockerConfig(), client=TwoCoreHost())  # type: ignore[arg-type]
    kwargs = launcher.run_kwargs(_request(4, side_by_side=2))
    assert kwargs["nano_cpus"] == 1_000_000_000
    assert kwargs["environment"]["MLBATCH_JOB_VCPU"] == "1"
    assert launcher.run_kwargs(_request(0.5, side_by_side=2))["nano_cpus"] == 500_000_000  # within its share
    assert launcher.run_kwargs(_request(4, side_by_side=8))["nano_cpus"] == 1_000_000_000  # at least 1 CPU
