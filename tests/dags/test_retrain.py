"""train.retrain under ``dag.test()`` on the embedded stack: what a label sync decides and reads.

The demo trains device_gender on 31,880 labels (the default policy: 5,000 changed rows or 5%,
at most once a day). Hour by hour on the next day, the labels DAG sees: no change, then two small
edits. A sync that changed nothing writes nothing but its sync log row (no snapshot, no realized
rows); the small edits start no training, and realized performance reads the day's label changes
once. That a material edit starts training once per ``min_interval``, through the asset event, is
shown under the real scheduler (tests/integration/airflow/test_fleet.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.cli import DS, cli_env, mlbatch
from tests.support.paths import REPO

pytestmark = pytest.mark.e2e

DAY = "2026-11-24"  # the day after the demo's late-label sync
# (hour of DAY, rows whose label flips before that hour's sync)
NO_CHANGE = [(1, 0)]
EDITS = [(2, 10), (3, 10)]

SCRIPT = """
import csv, json, sys
from datetime import datetime, timezone
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag

home, edits, flipped = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
sheet = home / "sheets" / "device_gender.csv"
dag = DagBag(dag_folder={dags!r}).get_dag("device_gender__labels")
for hour, n in edits:
    rows = list(csv.reader(sheet.open(encoding="utf-8", newline="")))
    for row in rows[1 + flipped : 1 + flipped + n]:
        row[1] = "male" if row[1] == "female" else "female"
    flipped += n
    with sheet.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\\n").writerows(rows)
    when = datetime(2026, 11, 24, hour, tzinfo=timezone.utc)
    run = dag.test(logical_date=when, run_after=when)
    states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
    print("RUN", json.dumps({{"hour": hour, "run_id": run.run_id, "states": states}}))
"""


def _objects(home: Path) -> set[str]:
    root = home / "objects"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json.tmp")}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("retrain")
    mlbatch(home, "demo", "--ds", DS, "--model", "device_gender")
    # As if production had been trained two days ago on today's labels (the demo's late labels
    # included): the edits below are then all that changed since its snapshot.
    db = sqlite3.connect(home / "app.db")
    [(latest,)] = db.execute(
        "SELECT sync_id FROM ml_label_syncs WHERE model = 'device_gender' AND snapshot_uri IS NOT NULL "
        "ORDER BY finished_at DESC LIMIT 1"
    ).fetchall()
    [(version, lineage)] = db.execute(
        "SELECT version, lineage_json FROM ml_model_versions WHERE model = 'device_gender' AND status = 'production'"
    ).fetchall()
    lineage = json.loads(lineage) | {"label_sync_id": latest}
    db.execute("UPDATE ml_model_versions SET lineage_json = ? WHERE version = ?", (json.dumps(lineage), version))
    db.commit()
    db.close()
    started = (datetime.now(UTC) - timedelta(days=2)).replace(tzinfo=None).isoformat()
    record = home / "objects" / "retrain" / "device_gender" / "last_training.json"
    record.write_text(json.dumps(json.loads(record.read_text()) | {"started_at": started, "label_sync_id": latest}))
    return home


def _labels_runs(home: Path, edits: list[tuple[int, int]], flipped: int) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(dags=str(REPO / "dags")), str(home), json.dumps(edits), str(flipped)],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    runs = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("RUN ")]
    assert len(runs) == len(edits), proc.stdout[-3000:] + proc.stderr[-6000:]
    return runs


def _state(home: Path, run_id: str, name: str) -> dict:
    """A labels run's step result, from its scratch state (RunContext.state_key)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "", run_id)[:60]
    run_key = f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}"
    return json.loads((home / "objects" / "runs" / "device_gender" / DAY / run_key / f"{name}.json").read_text())


def _table(home: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(home / "app.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_sync_without_change_reads_the_sheet_and_writes_nothing_else(home: Path) -> None:
    realized = "SELECT * FROM ml_realized_performance ORDER BY ds"
    before, realized_before = _objects(home), _table(home, realized)
    [run] = _labels_runs(home, NO_CHANGE, 0)
    assert run["states"]["announce_labels"] == "skipped" and run["states"]["realized_performance"] == "success"
    written = {p for p in _objects(home) - before if not p.startswith(f"runs/device_gender/{DAY}/")}
    # Only the staged labels of the check (scratch, like the run's state): no snapshot, no report.
    assert all(p.startswith("labels/device_gender/staged/") for p in written), written
    assert _table(home, realized) == realized_before
    [(verdict, snapshot)] = _table(
        home,
        "SELECT verdict, snapshot_uri FROM ml_label_syncs WHERE model = 'device_gender' "
        "ORDER BY started_at DESC LIMIT 1",
    )
    assert (verdict, snapshot) == ("no_change", None)
    assert _state(home, run["run_id"], "realized")["skipped"] == (
        "no label changed and no day was published since the last measurement"
    )
    assert _state(home, run["run_id"], "retrain")["reason"].startswith("not material: 0 changed rows (0.0%)")


def test_small_edits_start_no_training_and_realized_reads_a_day_s_changes_once(home: Path) -> None:
    runs = _labels_runs(home, EDITS, 0)
    assert {r["hour"]: r["states"]["announce_labels"] for r in runs} == {2: "skipped", 3: "skipped"}
    reasons = {r["hour"]: _state(home, r["run_id"], "retrain")["reason"] for r in runs}
    assert re.fullmatch(
        r"not material: 20 changed rows \(0\.1%\) since the production model's snapshot < 5,000 rows and < 5%",
        reasons[3],
    ), reasons

    # Realized performance measured the day's label changes once (at 02:00), then waited for the next day.
    measured = {r["hour"]: _state(home, r["run_id"], "realized") for r in runs}
    assert measured[2]["read"]["label_changes"] == 10 and measured[2]["read"]["days_scanned"] == 0
    assert "at most once a day" in measured[3]["skipped"]

    status = json.loads(mlbatch(home, "status", "--json").stdout)
    model = {m["name"]: m for m in status["models"]}["device_gender"]
    assert model["retrain"]["retrain"] is False and model["retrain"]["reason"] == reasons[3]


def test_the_cost_line_is_in_the_run_reports_and_in_status(home: Path) -> None:
    summary = json.loads((home / "objects" / "predictions" / "device_gender" / DS / "summary.json").read_text())
    cost = summary["cost"]
    assert cost["job_vcpu_seconds"] > 0 and cost["job_gpu_seconds"] == 0 and cost["bytes_unloaded"] > 0
    assert cost["rows_published"] == summary["rows"]
    status = json.loads(mlbatch(home, "status", "--json").stdout)
    month = {m["name"]: m for m in status["models"]}["device_gender"]["cost"]
    assert month["runs"] >= 2 and month["rows_published"] >= summary["rows"]  # the train run and the score run
    assert month["job_vcpu_seconds"] > cost["job_vcpu_seconds"]  # training's share
    [version] = [v for v in (home / "objects" / "models" / "device_gender").iterdir() if v.is_dir()]
    assert "<p>Cost: vCPU " in (version / "report.html").read_text()

    text = mlbatch(home, "status", COLUMNS="80").stdout
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80 and "…" not in text
    assert version.name in text and "rows published" in text


def test_run_stage_publish_publishes_a_day_the_score_dag_scored(home: Path) -> None:
    proc = mlbatch(home, "run", "device_gender", "--ds", DS, "--stage", "publish")
    assert f"publishing the predictions of run manual__{DS}T00:00:00+00:00" in proc.stdout
    assert f"ok device_gender {DS} publish: rows=" in proc.stdout
