"""DagBag parse time with 20 models: measured and printed (speed lives in the report, not in asserts)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml

from tests.support.paths import REPO

MODELS = 20


def test_dagbag_parses_20_generated_specs(tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    (dags / "specs").mkdir(parents=True)
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    for key in ("training_sql", "scoring_sql"):
        raw["features"][key] = str(REPO / raw["features"][key])
    for i in range(MODELS):
        name = f"model_{i:02d}"
        (dags / "specs" / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "name": name}))
        shutil.copy(REPO / "dags" / "device_gender.py", dags / f"{name}.py")

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(dags))
    elapsed = time.perf_counter() - started
    per_file = {Path(s.file).name: s.duration.total_seconds() for s in bag.dagbag_stats}
    print(
        f"\nDagBag parse of {MODELS} specs: {len(bag.dags)} DAGs in {elapsed:.2f} s "
        f"(per file: median {sorted(per_file.values())[MODELS // 2]:.3f} s, max {max(per_file.values()):.3f} s)"
    )
    assert bag.import_errors == {}
    assert len(bag.dags) == 3 * MODELS
    assert {f"model_{i:02d}__{k}" for i in range(MODELS) for k in ("labels", "train", "score")} == set(bag.dags)


def test_a_fleet_spreads_its_schedules_and_shares_the_pools(tmp_path, monkeypatch):
    """20 models with MLBATCH_POOLS=all and a 60-minute window: runs start at different minutes,
    and every task that touches a shared server takes a slot of its pool (mlbatch.airflow.pools)."""
    from airflow.dag_processing.dagbag import DagBag
    from mlbatch.airflow.pools import APPDB_POOL, GPU_POOL, HEAVY_POOL, WAREHOUSE_POOL

    monkeypatch.setenv("MLBATCH_POOLS", "all")
    monkeypatch.setenv("MLBATCH_SCHEDULE_WINDOW_MINUTES", "60")
    dags = tmp_path / "dags"
    (dags / "specs").mkdir(parents=True)
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    for key in ("training_sql", "scoring_sql"):
        raw["features"][key] = str(REPO / raw["features"][key])
    for i in range(MODELS):
        name = f"model_{i:02d}"
        (dags / "specs" / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "name": name}))
        shutil.copy(REPO / "dags" / "device_gender.py", dags / f"{name}.py")
    bag = DagBag(dag_folder=str(dags))
    assert bag.import_errors == {}
    score = [bag.dags[f"model_{i:02d}__score"] for i in range(MODELS)]
    minutes = {d.timetable.expression.split()[0] for d in score}
    assert len(minutes) >= 10, minutes  # 20 daily runs, not all at 00:00
    pools = {t.pool for d in bag.dags.values() for t in d.tasks}
    assert (
        {WAREHOUSE_POOL, APPDB_POOL, HEAVY_POOL, GPU_POOL}
        <= pools
        <= {
            WAREHOUSE_POOL,
            APPDB_POOL,
            HEAVY_POOL,
            GPU_POOL,
            "default_pool",
        }
    )
