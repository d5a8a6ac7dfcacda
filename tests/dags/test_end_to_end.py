"""The whole pipeline through the real Airflow DAGs on the embedded stack, twice, plus gate stops."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.support.cli import DS, cli_env, mlbatch
from tests.support.paths import REPO

pytestmark = pytest.mark.e2e


def _counts(home: Path) -> dict[str, object]:
    db = sqlite3.connect(home / "app.db")
    q = lambda sql: db.execute(sql).fetchall()  # noqa: E731
    wh = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    counts = {
        "labels": q("SELECT count(*), count(DISTINCT entity_key) FROM ml_labels WHERE model = 'device_gender'"),
        "history": q("SELECT count(*) FROM ml_label_history WHERE model = 'device_gender'"),
        "versions": q("SELECT version, status FROM ml_model_versions WHERE model = 'device_gender' ORDER BY version"),
        "predictions": q(
            "SELECT count(*), count(DISTINCT entity_key), min(score), max(score) FROM device_gender_predictions"
        ),
        "publish_log": q(
            "SELECT model, ds, rows_published, checksum FROM ml_publish_log WHERE model = 'device_gender'"
        ),
        "export": wh.execute(
            "SELECT ds::VARCHAR, count(*), count(DISTINCT entity_key) FROM ml_exports.device_gender_predictions GROUP BY 1"
        ).fetchall(),
    }
    wh.close()
    db.close()
    return counts


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("embedded")
    proc = mlbatch(home, "demo", "--ds", DS, COLUMNS="80")
    assert "device_gender__score" in proc.stdout
    (home / "demo.out").write_text(proc.stdout)
    return home


def test_the_demo_s_summary_fits_80_columns_and_elides_nothing(demo_home):
    out = (demo_home / "demo.out").read_text()
    # What the demo prints itself (Airflow's own warnings may come through on stdout too).
    ours = [line for line in out.splitlines() if not line.startswith("20")]  # not a log line's timestamp
    wide = [line for line in ours if len(line.rstrip()) > 80]
    assert not wide, wide
    status = json.loads(mlbatch(demo_home, "status", "--json").stdout)
    summary = out[out.index("mlbatch status") :]
    for model in status["models"]:
        assert model["name"] in summary
        if model["production_model"]:
            assert model["production_model"]["version"] in summary  # whole, never cut to "20261122-…"
    assert "…" not in summary


def test_demo_runs_every_dag_and_status_reports_the_contract(demo_home):
    status = json.loads(mlbatch(demo_home, "status", "--json").stdout)
    models = {m["name"]: m for m in status["models"]}
    model = models["device_gender"]
    assert model["labels"]["rows"] > 25_000 and model["labels"]["sync_id"].startswith("device_gender-")
    prod = model["production_model"]
    assert prod["metric"] == "roc_auc" and prod["value"] >= 0.75
    assert model["predictions"] == {"latest_ds": DS, "rows": model["export"]["rows"]}
    assert model["export"]["latest_ds"] == DS and model["export"]["rows"] > 0


def test_tables_hold_what_the_stages_promised(demo_home):
    c = _counts(demo_home)
    labels, distinct = c["labels"][0]
    assert labels == distinct > 25_000
    assert c["history"] == [(labels,)]  # every label was an insert of the first sync
    [(version, status)] = c["versions"]
    assert status == "production"
    rows, keys, lo, hi = c["predictions"][0]
    assert rows == keys > 100_000 and 0.0 <= lo < hi <= 1.0
    assert c["publish_log"][0][:3] == ("device_gender", DS, rows)
    assert c["export"] == [(DS, rows, rows)]
    # Scoring covered exactly the rows the day's scoring unload returned.
    manifests = list((demo_home / "objects" / "unload" / "device_gender" / "score" / DS).glob("*/manifest"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["meta"]["record_count"] == rows and len(manifest["entries"]) >= 2
    # The model's lineage names the labels and data it was trained on.
    lineage = json.loads((demo_home / "objects" / "models" / "device_gender" / version / "lineage.json").read_text())
    assert lineage["label_sync_id"].startswith("device_gender-")
    assert lineage["features_manifest"].endswith("/manifest")
    # Run reports: the model's HTML report (gate verdicts, lineage) and the day's scoring summary.
    report = (demo_home / "objects" / "models" / "device_gender" / version / "report.html").read_text()
    assert '<b class="ok">production</b>' in report and lineage["label_sync_id"] in report
    assert "roc_auc" in report and "Confusion matrix" in report
    summary = json.loads((demo_home / "objects" / "predictions" / "device_gender" / DS / "summary.json").read_text())
    assert summary["rows"] == rows == sum(summary["score"]["histogram"]) == sum(summary["labels"].values())


def test_second_demo_changes_no_table(demo_home):
    before = _counts(demo_home)
    mlbatch(demo_home, "demo", "--ds", DS, "--model", "device_gender")  # the tables counted are its
    assert _counts(demo_home) == before
    db = sqlite3.connect(demo_home / "app.db")
    verdicts = [
        v for (v,) in db.execute("SELECT verdict FROM ml_label_syncs WHERE model = 'device_gender' ORDER BY started_at")
    ]
    # First demo: the sheet, then the late labels of the published day; the second demo's sheet
    # holds both from the start, so neither of its syncs changes anything.
    assert verdicts == ["applied", "applied", "no_change", "no_change"]


def test_unknown_spec_field_exits_2_naming_it(demo_home, tmp_path):
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["score"]["shard_count"] = 4
    spec = tmp_path / "device_gender.yaml"
    spec.write_text(yaml.safe_dump(raw))
    proc = mlbatch(demo_home, "run", str(spec), "--ds", DS, check=False)
    assert proc.returncode == 2
    assert "score.shard_count: unknown field" in proc.stderr and str(spec) in proc.stderr


def test_failed_feature_gate_stops_the_score_dag_and_writes_nothing(demo_home, tmp_path):
    """Through Airflow: the gate task fails, every later task is upstream_failed, no row is written."""
    dags = tmp_path / "dags"
    (dags / "specs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "device_gender.py", dags)
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["features"]["checks"]["min_rows"] = 10_000_000
    for key in ("training_sql", "scoring_sql"):
        raw["features"][key] = str(REPO / raw["features"][key])
    (dags / "specs" / "device_gender.yaml").write_text(yaml.safe_dump(raw))
    before = _counts(demo_home)
    script = textwrap.dedent(f"""
        from datetime import datetime, timezone
        from airflow.dag_processing.dagbag import DagBag
        day = datetime(2026, 11, 23, tzinfo=timezone.utc)
        dag = DagBag(dag_folder={str(dags)!r}).get_dag("device_gender__score")
        run = dag.test(logical_date=day, run_after=day)
        for ti in run.get_task_instances():
            print("STATE", ti.task_id, ti.state)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=cli_env(demo_home, AIRFLOW__CORE__DAGS_FOLDER=str(dags)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    states = dict(line.split()[1:3] for line in proc.stdout.splitlines() if line.startswith("STATE"))
    assert states["features_gate"] == "failed", proc.stdout + proc.stderr
    for task in ("score", "predictions_gate", "publish", "export", "export_gate"):
        assert states[task] == "upstream_failed", (task, states)
    assert "FAIL rows: observed 161,244, threshold >= 10,000,000" in proc.stdout + proc.stderr
    assert _counts(demo_home) == before


def test_cli_gate_failure_exits_1_and_keeps_production(demo_home, tmp_path):
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["train"]["gate"]["min"] = 0.99
    raw["train"]["params"]["n_estimators"] = 20  # another version (params are in its hash), quickly
    for key in ("training_sql", "scoring_sql"):
        raw["features"][key] = str(REPO / raw["features"][key])
    spec = tmp_path / "device_gender.yaml"
    spec.write_text(yaml.safe_dump(raw))
    before = _counts(demo_home)
    proc = mlbatch(demo_home, "run", str(spec), "--ds", DS, "--stage", "unload", "--stage", "train", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gate device_gender.model blocked" in proc.stderr and "threshold >= 0.99" in proc.stderr
    after = _counts(demo_home)
    rejected = [v for v in after["versions"] if v not in before["versions"]]
    assert [s for _, s in rejected] == ["rejected"]
    assert [v for v in after["versions"] if v[1] == "production"] == [
        v for v in before["versions"] if v[1] == "production"
    ]


def test_doctor_is_green_on_the_demo_stack(demo_home):
    stdout = mlbatch(demo_home, "doctor", "--json").stdout
    report = json.loads(stdout[stdout.index("{") :])  # after any log line Airflow writes to stdout
    got = {c["boundary"]: c["status"] for c in report["checks"]}
    assert report["ok"] and got["warehouse"] == got["object store"] == got["app DB"] == "ok", got
    assert got["ECS"] == "skip" and "FAIL" not in got.values(), got
