"""Airflow pools of mlbatch: GPU jobs queue in ``mlbatch_gpu`` instead of over-booking GPUs.

A train task with ``train.resources.gpu: N`` (a score task with ``score.resources.gpu: N``) takes
N slots of the pool; jobs with ``gpu: 0`` (scoring, by default) never enter it. So
the pool's size is the number of GPUs the job runner may use at once. The size comes from
``MLBATCH_GPU_POOL_SLOTS``; unset, it is the largest job's GPU count (one job at a time).
A task whose pool does not exist, or asks for more slots than the pool has, is never scheduled:
create the pool before unpausing the DAGs (``make airflow`` does, as does
``python -m mlbatch.pools``, which runs ``airflow pools set``).

Imported at DAG parse time for :data:`GPU_POOL`: nothing heavy at the top.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GPU_POOL = "mlbatch_gpu"
SLOTS_ENV = "MLBATCH_GPU_POOL_SLOTS"


def gpu_pool_slots(specs_dir: Path | None = None) -> int:
    """The pool size: ``MLBATCH_GPU_POOL_SLOTS``, else the largest GPU job among the specs (min 1)."""
    needed = _largest_gpu_job(specs_dir)
    raw = os.environ.get(SLOTS_ENV)
    if raw is None or raw == "":
        return max(1, needed)
    try:
        slots = int(raw)
    except ValueError:
        raise ValueError(f"{SLOTS_ENV}={raw!r} is not a whole number of GPU slots") from None
    if slots < max(1, needed):
        raise ValueError(
            f"{SLOTS_ENV}={slots} is below the largest GPU job ({needed} GPUs, train or score "
            "resources.gpu of a spec): its tasks would never be scheduled"
        )
    return slots


def _largest_gpu_job(specs_dir: Path | None) -> int:
    from mlbatch.env import Environment
    from mlbatch.spec import load_all

    specs = load_all(specs_dir or Environment.from_env().specs_dir)
    return max((r.gpu for s in specs for r in (s.train.resources, s.score.resources)), default=0)


def pools_set_command(slots: int) -> list[str]:
    """The ``airflow pools set`` command line that creates or resizes the GPU pool."""
    return [
        sys.executable,
        "-m",
        "airflow",
        "pools",
        "set",
        GPU_POOL,
        str(slots),
        "mlbatch GPU jobs (train, score): one slot per GPU; size from MLBATCH_GPU_POOL_SLOTS",
    ]


def ensure_pools(specs_dir: Path | None = None) -> int:
    """Create or resize the GPU pool in the Airflow metadata DB; returns its size."""
    slots = gpu_pool_slots(specs_dir)
    subprocess.run(pools_set_command(slots), check=True, stdout=subprocess.DEVNULL)
    return slots


if __name__ == "__main__":
    print(f"pool {GPU_POOL}: {ensure_pools()} slot(s)")
