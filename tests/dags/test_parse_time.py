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
