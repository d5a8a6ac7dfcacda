"""Airflow pools of mlbatch, sized in one place: what a fleet of models shares is protected.

* ``mlbatch_gpu``: GPU jobs, one slot per GPU (``train.resources.gpu: N`` takes N slots; jobs with
  ``gpu: 0``, scoring by default, never enter it). Size ``MLBATCH_GPU_POOL_SLOTS``; unset, the
  largest job's GPU count (one job at a time).
* ``mlbatch_warehouse``: warehouse statements (UNLOADs, the export's replace of a day), one slot
  each: the cluster's WLM queue, not the scheduler, sets how many can run at once.
* ``mlbatch_appdb``: app-DB publishes (each loads a day with ``publish.sessions`` sessions).
* ``mlbatch_heavy``: in-worker tasks that stream a day or a training profile (the features and
  prediction gates, realized performance): they share a worker's memory.

Each size is :data:`POOLS`' default unless ``MLBATCH_<NAME>_POOL_SLOTS`` says otherwise. A task
whose pool does not exist, or asks for more slots than the pool has, is never scheduled: every
deployment creates the pools before the DAGs run. ``python -m mlbatch.airflow.pools`` runs ``airflow pools
set`` for each (``make airflow``; the Helm chart's migration job, deploy/helm/values.yaml);
``python -m mlbatch.airflow.pools --json`` prints the Airflow REST API's bulk upsert of them
(``PATCH /api/v2/pools``), which deploy/mwaa/create-pools.sh sends through MWAA's InvokeRestApi
and the stack tests send to their API server. ``MLBATCH_POOLS=gpu`` limits the DAGs to the GPU pool
(an Airflow whose other pools cannot be created yet).

The GPU and warehouse pools count deferred tasks (``include_deferred``): an ECS job or a Redshift
statement keeps running while its task waits in the triggerer, so a deferred task still holds the
GPU or the WLM slot it took.

Schedules of many models are spread over a window (:func:`spread`): a stable per-model offset,
a hash of the model's name, so a fleet's daily runs do not all start at midnight.

Imported at DAG parse time: nothing heavy at the top.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPU_POOL = "mlbatch_gpu"
WAREHOUSE_POOL = "mlbatch_warehouse"
APPDB_POOL = "mlbatch_appdb"
HEAVY_POOL = "mlbatch_heavy"
SLOTS_ENV = "MLBATCH_GPU_POOL_SLOTS"
WINDOW_ENV = "MLBATCH_SCHEDULE_WINDOW_MINUTES"
# Which pools the DAGs' tasks use: "all" (the default: every deployment creates them, see above)
# or "gpu" (GPU jobs only).
USE_ENV = "MLBATCH_POOLS"
DEFAULT_WINDOW_MINUTES = 0  # 0: every model on its spec's exact time (set e.g. 60 for a fleet)


@dataclass(frozen=True)
class Pool:
    name: str
    default: int
    description: str
    include_deferred: bool = False  # a deferred task still holds its slot (its work runs elsewhere)

    @property
    def env(self) -> str:
        return f"MLBATCH_{self.name.removeprefix('mlbatch_').upper()}_POOL_SLOTS"


#: The pools besides the GPU's (whose default follows the specs), with their default sizes.
POOLS: tuple[Pool, ...] = (
    Pool(WAREHOUSE_POOL, 4, "mlbatch warehouse statements (UNLOAD, export): one slot each", include_deferred=True),
    Pool(APPDB_POOL, 2, "mlbatch app-DB publishes: one slot each"),
    Pool(HEAVY_POOL, 4, "mlbatch in-worker tasks that stream a day (gates, realized performance)"),
)
GPU_DESCRIPTION = f"mlbatch GPU jobs (train, score): one slot per GPU; size from {SLOTS_ENV}"
_INCLUDE_DEFERRED = {GPU_POOL: True} | {p.name: p.include_deferred for p in POOLS}
_DESCRIPTIONS = {GPU_POOL: GPU_DESCRIPTION} | {p.name: p.description for p in POOLS}


def _slots(env: str, default: int, least: int = 1) -> int:
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return max(least, default)
    try:
        slots = int(raw)
    except ValueError:
        raise ValueError(f"{env}={raw!r} is not a whole number of slots") from None
    if slots < least:
        raise ValueError(f"{env}={slots} is below {least}: tasks needing {least} slot(s) would never be scheduled")
    return slots


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


def pool_sizes(specs_dir: Path | None = None) -> dict[str, int]:
    """Every mlbatch pool and its size (GPU first)."""
    return {GPU_POOL: gpu_pool_slots(specs_dir)} | {p.name: _slots(p.env, p.default) for p in POOLS}


def _largest_gpu_job(specs_dir: Path | None) -> int:
    # Only when sizing pools: the DAG factory imports this module on every parse.
    from mlbatch.backends.env import Environment
    from mlbatch.spec import load_all

    specs = load_all(specs_dir or Environment.from_env().specs_dir)
    return max((r.gpu for s in specs for r in (s.train.resources, s.score.resources)), default=0)


def pools_set_command(slots: int, name: str = GPU_POOL) -> list[str]:
    """The ``airflow pools set`` command line that creates or resizes a pool."""
    command = [sys.executable, "-m", "airflow", "pools", "set", name, str(slots), _DESCRIPTIONS[name]]
    return command + (["--include-deferred"] if _INCLUDE_DEFERRED[name] else [])


def ensure_pools(specs_dir: Path | None = None) -> dict[str, int]:
    """Create or resize every mlbatch pool in the Airflow metadata DB; returns their sizes."""
    sizes = pool_sizes(specs_dir)
    for name, slots in sizes.items():
        subprocess.run(pools_set_command(slots, name), check=True, stdout=subprocess.DEVNULL)
    return sizes


def counts_deferred(name: str) -> bool:
    """Whether the pool counts its deferred tasks (``include_deferred``)."""
    return _INCLUDE_DEFERRED[name]


def rest_upsert(specs_dir: Path | None = None) -> dict[str, Any]:
    """The body of Airflow's bulk pools endpoint (``PATCH /api/v2/pools``) that creates every mlbatch
    pool or overwrites it with its size here: for deployments reached only through the REST API."""
    entities = [
        {"name": name, "slots": slots, "description": _DESCRIPTIONS[name], "include_deferred": _INCLUDE_DEFERRED[name]}
        for name, slots in pool_sizes(specs_dir).items()
    ]
    return {"actions": [{"action": "create", "entities": entities, "action_on_existence": "overwrite"}]}


def shared_pools_on() -> bool:
    """Whether tasks use the warehouse, app-DB and heavy pools (``MLBATCH_POOLS``, ``all`` unless ``gpu``)."""
    value = os.environ.get(USE_ENV, "all").strip().lower() or "all"
    if value not in ("gpu", "all"):
        raise ValueError(f"{USE_ENV}={value!r}: use gpu (GPU jobs only) or all")
    return value == "all"


def window_minutes() -> int:
    """The schedule window (``MLBATCH_SCHEDULE_WINDOW_MINUTES``, 0..1440)."""
    minutes = _slots(WINDOW_ENV, DEFAULT_WINDOW_MINUTES, 0)
    if minutes > 1440:
        raise ValueError(f"{WINDOW_ENV}={minutes}: a window longer than a day would move runs to another day")
    return minutes


def offset_minutes(model: str, window: int) -> int:
    """The model's stable offset within the window: a hash of its name (the same on every parse)."""
    if window <= 0:
        return 0
    return int.from_bytes(hashlib.sha256(model.encode()).digest()[:4], "big") % window


def spread(cron: str, model: str, window: int) -> str:
    """A 5-field cron moved by the model's offset, when its minute and hour are fixed numbers.

    ``0 0 * * *`` with an offset of 97 minutes is ``37 1 * * *``. Hourly schedules (``0 * * * *``)
    move within the hour (offset mod 60). Anything else (lists, ranges, steps) stays as written: it
    was set by hand.
    """
    offset = offset_minutes(model, window)
    fields = cron.split()
    if not offset or len(fields) != 5 or not fields[0].isdigit():
        return cron
    minute = int(fields[0])
    if fields[1] == "*":
        return " ".join([str((minute + offset) % 60), *fields[1:]])
    if not fields[1].isdigit():
        return cron
    total = int(fields[1]) * 60 + minute + offset
    if total >= 24 * 60:  # never past midnight: that would be the next day's run
        total = 24 * 60 - 1
    return " ".join([str(total % 60), str(total // 60), *fields[2:]])


if __name__ == "__main__":
    if sys.argv[1:] == ["--json"]:
        print(json.dumps(rest_upsert()))
    elif sys.argv[1:]:
        sys.exit(
            "usage: python -m mlbatch.airflow.pools [--json]  "
            "(--json: print the REST API's upsert instead of running it)"
        )
    else:
        for pool_name, size in ensure_pools().items():
            print(f"pool {pool_name}: {size} slot(s)")
