"""How many threads a job's pools get: the CPUs it may run on, capped by the CPU it was given.

Standard library only: the launchers import it too, to size a job's share of their own host.
"""

from __future__ import annotations

import os
from pathlib import Path

VCPU_ENV = "MLBATCH_JOB_VCPU"  # set by every launcher from the spec's resources.vcpu
CGROUP = Path("/sys/fs/cgroup")  # inside a container: the container's own cgroup


def cores() -> int:
    """Threads for the job's pools (xgboost, torch, pyarrow): the CPUs it may run on, capped by
    the CPU it was given.

    The CPU set (affinity) is not enough: a container limited by a CPU quota (``docker --cpus``,
    an ECS task's ``cpu`` on an EC2 host) still sees every core of the host, and a pool of 48
    threads under a quota of 4 CPUs is throttled in every scheduling period. So the count is the
    smallest of the CPU set, the cgroup's quota and ``MLBATCH_JOB_VCPU`` (the launcher's
    allotment), rounded down, at least 1.
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for limit in (_cgroup_quota(), _env_vcpu()):
        if limit is not None:
            n = min(n, max(1, int(limit)))
    return n


def _env_vcpu() -> float | None:
    raw = os.environ.get(VCPU_ENV, "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None  # unset or not a number: no allotment to honour
    return value if value > 0 else None


def _cgroup_quota() -> float | None:
    """CPUs of this cgroup's quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``); None: no quota."""
    try:
        quota, period = (CGROUP / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((CGROUP / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((CGROUP / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
