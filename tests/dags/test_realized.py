"""Realized performance on the embedded stack: late labels measure the published day.

The demo trains, scores and publishes device_gender for DS, then syncs its late labels; analysts
then label more scored devices they had not labelled (the synthetic truth). Honest late labels give a realized ROC AUC close to
the offline one and no alert; a segment whose labels are flipped on purpose drags it below the
gate's minimum: the labels DAG posts the alert to the webhook, flags the version, and
``mlbatch status --json`` shows the realized metric against the offline one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools import synth
from devtools.demo import LATE_LABELS
from tests.support.cli import DS, cli_env, mlbatch
from tests.support.paths import REPO

pytestmark = pytest.mark.e2e

HONEST, FLIPPED = 1_500, 3_000


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhook():
    handler = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/hooks/mlbatch"}
    server.shutdown()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("realized")
    mlbatch(home, "demo", "--ds", DS, "--model", "device_gender")
    return home


def _sheet_keys(sheet: Path) -> set[str]:
    """Every key the sheet holds, as the label check reads it (rejected rows too: a key with a
    bad row gets a conflict, not a label, when another row is added)."""
    with open(sheet, encoding="utf-8", newline="") as f:
        return {unicodedata.normalize("NFKC", row[0]).strip() for row in csv.reader(f) if row}


def _unlabelled_scored_keys(home: Path) -> list[int]:
    in_sheet = _sheet_keys(home / "sheets" / "device_gender.csv")
    db = sqlite3.connect(home / "app.db")
    keys = [
        k
        for (k,) in db.execute(
            "SELECT entity_key FROM device_gender_predictions WHERE ds = ? AND CAST(entity_key AS TEXT) NOT IN "
            "(SELECT entity_key FROM ml_labels WHERE model = 'device_gender') ORDER BY entity_key",
            (DS,),
        )
    ]
    db.close()
    return [k for k in keys if str(k) not in in_sheet]


def _labels_dag(home: Path, day: str, conn: dict) -> dict[str, str]:
    script = textwrap.dedent(f"""
        from datetime import datetime, timezone
        from airflow.dag_processing.dagbag import DagBag
        day = datetime.fromisoformat({day!r}).replace(tzinfo=timezone.utc)
        dag = DagBag(dag_folder={str(REPO / "dags")!r}).get_dag("device_gender__labels")
        run = dag.test(logical_date=day, run_after=day)
        for ti in run.get_task_instances():
            print("STATE", ti.task_id, ti.state)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=cli_env(home, AIRFLOW_CONN_MLBATCH_ALERTS=json.dumps(conn)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    states = dict(line.split()[1:3] for line in proc.stdout.splitlines() if line.startswith("STATE"))
    assert states.get("realized_performance") == "success", proc.stdout[-3000:] + proc.stderr[-6000:]
    return states


def _run_dir(home: Path, ds: str, run_id: str) -> Path:
    """A run's scratch state folder (RunContext.state_key)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "", run_id)[:60]
    return (
        home / "objects" / "runs" / "device_gender" / ds / f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}"
    )


def _realized_rows(home: Path) -> list[tuple]:
    db = sqlite3.connect(home / "app.db")
    rows = db.execute(
        "SELECT model_version, ds, metric, value, n_labelled, ci_low, ci_high, label_sync_id "
        "FROM ml_realized_performance WHERE model = 'device_gender'"
    ).fetchall()
    db.close()
    return rows


def test_late_labels_measure_production_and_a_flipped_segment_raises_the_alert(home, webhook):
    hook, conn = webhook
    spec_sheet = home / "sheets" / "device_gender.csv"
    warehouse = home / "warehouse.duckdb"
    keys = _unlabelled_scored_keys(home)
    assert len(keys) > HONEST + FLIPPED
    status = json.loads(mlbatch(home, "status", "--json").stdout)
    model = {m["name"]: m for m in status["models"]}["device_gender"]
    offline = model["production_model"]["value"]
    version = model["production_model"]["version"]
    # The demo ends with its own late labels (LATE_LABELS of the day's scored devices); the
    # labels it trained on are left out, so only those count.
    demo = model["realized"]
    assert (demo["ds"], demo["model_version"], demo["n_labelled"]) == (DS, version, LATE_LABELS)
    assert demo["metric"] == "roc_auc" and abs(demo["value"] - offline) < 0.06 and demo["degraded"] is False
    n0 = demo["n_labelled"]

    # 1. Honest late labels: realized close to offline, no alert, no flag.
    honest = keys[::2][:HONEST]
    assert synth.append_late_labels("device_gender", warehouse, spec_sheet, honest) == HONEST
    _labels_dag(home, "2026-11-24", conn)
    [(v, ds, metric, value, n, lo, hi, _sync)] = _realized_rows(home)
    assert (v, ds, metric, n) == (version, DS, "roc_auc", n0 + HONEST)
    assert lo < value < hi and abs(value - offline) < 0.06 and value >= 0.75
    assert hook.received == []

    # 2. A segment's labels flipped (three devices in four): realized AUC far below the gate.
    flipped = keys[1::2][:FLIPPED]
    synth.append_late_labels("device_gender", warehouse, spec_sheet, flipped, flip=lambda k: k % 4 != 0)
    states = _labels_dag(home, "2026-11-25", conn)
    assert states["apply_labels"] == "success"
    [(v, ds, metric, value, n, lo, hi, sync_id)] = _realized_rows(home)
    assert (v, ds, n) == (version, DS, n0 + HONEST + FLIPPED)
    assert value < 0.6 and hi < offline and hi < 0.75
    [alert] = hook.received
    assert alert["kind"] == "realized_performance" and alert["model"] == "device_gender"
    [day] = alert["days"]
    assert day["ds"] == DS and day["model_version"] == version and day["n_labelled"] == n
    assert day["realized"] == pytest.approx(value, abs=1e-4) and day["offline"] == pytest.approx(offline)
    assert f"version {version} degraded" in alert["text"] and f"n={n:,}" in alert["text"] and DS in alert["text"]

    db = sqlite3.connect(home / "app.db")
    flags = db.execute("SELECT version, flag, note FROM ml_model_flags WHERE model = 'device_gender'").fetchall()
    statuses = db.execute("SELECT status FROM ml_model_versions WHERE version = ?", (version,)).fetchall()
    db.close()
    assert [(f[0], f[1]) for f in flags] == [(version, "degraded")] and DS in flags[0][2]
    assert statuses == [("production",)]  # flagged, not demoted: a person or a new version decides

    # Shown: status --json, the version's report, the day's summary.json.
    realized = {m["name"]: m for m in json.loads(mlbatch(home, "status", "--json").stdout)["models"]}["device_gender"][
        "realized"
    ]
    assert realized["metric"] == "roc_auc" and realized["value"] == pytest.approx(value)
    assert realized["n_labelled"] == n and realized["offline"] == pytest.approx(offline)
    assert realized["degraded"] is True and realized["ds"] == DS and realized["ci"] == [lo, hi]
    assert "DEGRADED" in mlbatch(home, "status").stdout
    report = (home / "objects" / "models" / "device_gender" / version / "report.html").read_text()
    assert "Realized performance (late labels)" in report and "<polyline" in report and sync_id in report
    summary = json.loads((home / "objects" / "predictions" / "device_gender" / DS / "summary.json").read_text())
    assert summary["realized"]["value"] == pytest.approx(value) and summary["realized"]["n_labelled"] == n

    # 3. The CLI's labels stage on a day already measured measures nothing (once a day at most).
    proc = mlbatch(home, "run", "device_gender", "--ds", "2026-11-25", "--stage", "labels")
    assert "realized_performance: sync_id=" in proc.stdout and "skipped=measured for 2026-11-25 already" in proc.stdout
    [(v2, ds2, _m, value2, n2, *_rest)] = _realized_rows(home)
    assert (v2, ds2, n2) == (version, DS, n) and value2 == pytest.approx(value)

    # 4. The next day, 100 new labels: only those entities are looked up, the day is not re-read.
    more = keys[1::2][FLIPPED : FLIPPED + 100]
    assert synth.append_late_labels("device_gender", warehouse, spec_sheet, more) == 100
    proc = mlbatch(home, "run", "device_gender", "--ds", "2026-11-26", "--stage", "labels")
    read = json.loads((_run_dir(home, "2026-11-26", "cli__2026-11-26") / "realized.json").read_text())["read"]
    assert read == {"label_changes": 100, "history_rows": 100, "days_scanned": 0, "days_updated": 1}
    [(_v, _ds, _m, _value, n3, *_rest)] = _realized_rows(home)
    assert n3 == n + 100
