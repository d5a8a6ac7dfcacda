"""A fleet of twenty models on one Airflow, under the real scheduler (the stack of airflow_stack.py:
CeleryExecutor, two workers, PostgreSQL, Redis; MariaDB as the app DB, moto S3, the embedded
warehouse, jobs as local processes).

Twenty generated specs (YAML + SQL only, each reading its own 5,000-row table) share pools made
small on purpose; unpaused together, their twenty scheduled score runs of the day start at once and
must queue: the scheduler never
runs more warehouse statements, publishes or heavy in-worker tasks than the pools allow, and
every run still completes. While the burst runs, the first model's analysts edit labels hour by
hour: small edits start no training, a material edit starts one (asset-triggered, its reason
recorded), and a second material edit inside ``min_interval`` starts none.

The measured figures (per-file parse time from the DAG processor, the burst's wall time, the
peak concurrency per pool) are printed and kept in test-artifacts/fleet-figures.json;
benchmarks/README.md quotes them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.devservers import MariaDB, start_postgres, start_redis
from tests.integration.airflow.airflow_stack import (
    REPO,
    Canaries,
    Stack,
    airflow_env,
    free_port,
    start_airflow,
    today,
)
from tests.integration.airflow.rest import runs, succeeded, task_states, trigger

MODELS = [f"fleet_{i:02d}" for i in range(20)]
FIRST = MODELS[0]  # trained for real; the others serve the same artefact (see seed_production)
ROWS = 5_000  # rows of each model's table
LABELLED = 3_000  # rows of FIRST's label sheet
# Pools made small so that twenty runs at once contend for them (defaults: 4, 2, 4).
POOL_SLOTS = {"mlbatch_warehouse": 2, "mlbatch_appdb": 1, "mlbatch_heavy": 2}
# (rows whose label flips before the sync): three small edits, material, material again. (A sync
# with no change is tests/dags/test_retrain.py's: it writes nothing but its sync log row.)
EDITS = [10, 10, 10, 200, 200]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.e2e


def write_fleet(folder: Path, warehouse: Path, labels: Path) -> None:
    """Each model: a DAG file, a spec, and its training and scoring SQL reading its own table."""
    import duckdb

    base = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    (folder / "specs").mkdir(parents=True)
    with duckdb.connect(str(warehouse)) as con:
        for name in MODELS:
            con.execute(f"CREATE TABLE analytics.{name} AS SELECT * FROM analytics.devices")
            sql = folder / "sql" / name
            sql.mkdir(parents=True)
            for query in ("training", "scoring"):
                text = (REPO / "sql" / "redshift" / "device_gender" / f"{query}.sql").read_text()
                (sql / f"{query}.sql").write_text(text.replace("analytics.devices", f"analytics.{name}"))
            spec = json.loads(json.dumps(base))
            spec.update(name=name, description=f"Fleet model {name}: device_gender's features on its own table.")
            spec["labels"].update(source={"file": str(labels)}, schedule=None, write_back=None, min_rows=500)
            spec["features"].update(training_sql=str(sql / "training.sql"), scoring_sql=str(sql / "scoring.sql"))
            spec["features"]["checks"]["min_rows"] = 500
            spec["train"].update(
                schedule=None,  # trained when labels change materially (the asset event) only
                params={"max_depth": 3, "learning_rate": 0.3, "n_estimators": 30},
                gate={"metric": "roc_auc", "min": 0.6, "max_regression": 0.05},
                resources={"gpu": 0, "vcpu": 1, "memory_gib": 1},
            )
            spec["score"].update(shards=1, resources={"gpu": 0, "vcpu": 1, "memory_gib": 1})
            (folder / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            (folder / f"{name}.py").write_text((REPO / "dags" / "device_gender.py").read_text())


def seed_production(env: dict[str, str], ds: str) -> str:
    """Train FIRST with the CLI (labels, then train: the code the DAG tasks run), then register its
    artefact as every other model's production version: the fleet's subject is a day of scoring,
    and training twenty identical models would only add minutes. Returns the version."""
    import subprocess
    import sys

    from mlbatch.backends.env import Environment
    from mlbatch.stages import registry

    cli = [str(Path(sys.executable).parent / "mlbatch"), "run", FIRST, "--ds", ds, "--stage", "labels"]
    proc = subprocess.run(
        [*cli, "--stage", "unload", "--stage", "train"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        db = Environment.from_env().appdb
        prod = registry.production(db, FIRST)
        assert prod is not None, proc.stdout
        for name in MODELS[1:]:
            mv = {
                "model": name,
                "version": prod.version,
                "family": prod.family,
                "metric": prod.metric,
                "value": prod.value,
                "metrics": prod.metrics,
                "artifact_uri": prod.artifact_uri,
                "lineage": prod.lineage,
            }
            registry.register(db, mv)
            registry.promote(db, name, prod.version, f"the fleet test serves {FIRST}'s artefact", by="fleet-test")
        return prod.version
    finally:
        os.environ.clear()
        os.environ.update(saved)


def backdate_last_training(env: dict[str, str]) -> None:
    """As if FIRST's production model had been trained two days ago: ``min_interval`` (1 d) has
    passed, so only materiality decides the first material edit."""
    import boto3

    bucket, _, prefix = env["MLBATCH_OBJECT_STORE"].removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    key = f"{prefix}/retrain/{FIRST}/last_training.json"
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    record["started_at"] = (datetime.now(UTC) - timedelta(days=2)).replace(tzinfo=None).isoformat()
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, mariadb: MariaDB, s3_endpoint: str) -> Iterator[Stack]:
    import boto3
    from sqlalchemy import create_engine, text

    from devtools import synth

    home = tmp_path_factory.mktemp("fleet")
    canaries = Canaries()
    warehouse = home / "warehouse.duckdb"
    synth.build_warehouse(warehouse, n_devices=ROWS, n_recipes=100, ref_date=today())
    labels = home / "labels.csv"
    synth.write_label_sheet(warehouse, labels, n_labels=LABELLED)
    dags = home / "dags"
    write_fleet(dags, warehouse, labels)
    appdb = f"fleet_{uuid.uuid4().hex[:8]}"
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{appdb}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    admin.dispose()
    bucket = f"fleet-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    ).create_bucket(Bucket=bucket)
    with ExitStack() as stack:
        pg = start_postgres(home, password=canaries.metadb_password)
        stack.callback(pg.stop)
        redis = start_redis(home, password=canaries.redis_password)
        stack.callback(redis.stop)
        port = free_port()
        backend = "db+" + pg.url("postgresql+psycopg2")
        env = airflow_env(home, port, dags, pg.url(), redis.url, backend, canaries.ui_password)
        env.update(
            MLBATCH_SPECS_DIR=str(dags / "specs"),
            MLBATCH_APPDB_URL=mariadb.url.rsplit("/", 1)[0] + f"/{appdb}",
            MLBATCH_OBJECT_STORE=f"s3://{bucket}/mlbatch",
            MLBATCH_WAREHOUSE=f"duckdb://{warehouse}",
            MLBATCH_LAUNCHER="local",
            AWS_ENDPOINT_URL=s3_endpoint,
            AWS_ENDPOINT_URL_S3=s3_endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="AKIAFLEETTESTS",
            AWS_SECRET_ACCESS_KEY=canaries.aws_secret,
            AIRFLOW__CORE__PARALLELISM="8",
        )
        seed_production({**env, "MLBATCH_HOME": str(home / "cli")}, today().isoformat())
        backdate_last_training(env)
        st = Stack(home, f"http://127.0.0.1:{port}", env, canaries.ui_password)
        stack.callback(st.stop)
        with pytest.MonkeyPatch.context() as mp:  # the pools' sizes as create_pools reads them
            for name, slots in POOL_SLOTS.items():
                mp.setenv(f"MLBATCH_{name.removeprefix('mlbatch_').upper()}_POOL_SLOTS", str(slots))
            start_airflow(st, [f"{FIRST}__labels", f"{FIRST}__train"])
        yield st


def _flip(sheet: Path, start: int, n: int) -> None:
    rows = list(csv.reader(sheet.open(encoding="utf-8", newline="")))
    for row in rows[1 + start : 1 + start + n]:
        row[1] = {"male": "female", "female": "male"}.get(row[1], row[1])
    with sheet.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _decision(api, run_id: str) -> dict[str, Any]:
    r = api.get(f"/dags/{FIRST}__labels/dagRuns/{run_id}/taskInstances/decide_retrain/xcomEntries/return_value")
    r.raise_for_status()
    value = r.json()["value"]
    return value if isinstance(value, dict) else json.loads(value)


@pytest.fixture(scope="module")
def burst(fleet: Stack) -> dict[str, Any]:
    """Twenty score runs for today triggered at once (every model's midnight), and meanwhile the
    label edits of FIRST, one sync after another, as the hourly syncs would come."""
    ds = today().isoformat()
    sheet = fleet.home / "labels.csv"  # FIRST's labels.source.file
    with fleet.client() as api:
        for model in MODELS:
            fleet.wait(f"{model}__score to be parsed", lambda m=model: api.get(f"/dags/{m}__score").is_success)
        # Unpaused together: the scheduler starts every model's run of today at once, a fleet's midnight.
        started = time.monotonic()
        for model in MODELS:
            assert api.patch(f"/dags/{model}__score", json={"is_paused": False}).is_success
        score_runs = {
            m: fleet.wait(f"{m}'s scheduled run", lambda m=m: runs(api, f"{m}__score", run_type="scheduled"))[0]
            for m in MODELS
        }
        assert {r["logical_date"][:10] for r in score_runs.values()} == {ds}, score_runs
        score_runs = {m: r["dag_run_id"] for m, r in score_runs.items()}
        decisions, flipped, sync_s = [], 0, []
        for n in EDITS:
            _flip(sheet, flipped, n)
            flipped += n
            asked = time.monotonic()
            run_id = trigger(api, f"{FIRST}__labels")["dag_run_id"]
            fleet.wait(f"the label sync after {n} edits", lambda r=run_id: succeeded(api, f"{FIRST}__labels", [r]))
            decisions.append((n, run_id, _decision(api, run_id)))
            sync_s.append(time.monotonic() - asked)
        for model, run_id in score_runs.items():
            fleet.wait(
                f"{model}'s score run", lambda m=model, r=run_id: succeeded(api, f"{m}__score", [r]), timeout=900
            )
        wall_s = time.monotonic() - started
        train_runs = runs(api, f"{FIRST}__train")
        tis = []
        for model, run_id in score_runs.items():
            r = api.get(f"/dags/{model}__score/dagRuns/{run_id}/taskInstances", params={"limit": 100})
            r.raise_for_status()
            tis += r.json()["task_instances"]
        for dag_id in (f"{FIRST}__labels", f"{FIRST}__train"):
            r = api.get(f"/dags/{dag_id}/dagRuns/~/taskInstances", params={"limit": 1000})
            r.raise_for_status()
            tis += r.json()["task_instances"]
        dags = {
            d["dag_id"]: d for d in api.get("/dags", params={"limit": 100, "dag_id_pattern": "fleet_%"}).json()["dags"]
        }
        pools = {p["name"]: p for p in api.get("/pools").json()["pools"]}
    return {
        "wall_s": wall_s,
        "score_runs": score_runs,
        "decisions": decisions,
        "sync_s": sync_s,
        "train_runs": train_runs,
        "tis": tis,
        "dags": dags,
        "pools": pools,
    }


def peak_concurrency(tis: list[dict[str, Any]], pool: str) -> int:
    """Most task instances of ``pool`` running at once (a sweep over their start and end times; an
    end at the same instant as a start frees its slot first, as the scheduler counts)."""
    events = []
    for ti in tis:
        if ti["pool"] == pool and ti["start_date"] and ti["end_date"]:
            events += [(ti["start_date"], 1), (ti["end_date"], -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (datetime.fromisoformat(e[0]), e[1])):
        running += step
        peak = max(peak, running)
    return peak


def test_a_burst_of_twenty_score_runs_completes_within_the_pools(burst: dict[str, Any]) -> None:
    peaks = {pool: peak_concurrency(burst["tis"], pool) for pool in POOL_SLOTS}
    sizes = {pool: burst["pools"][pool]["slots"] for pool in POOL_SLOTS}
    assert sizes == POOL_SLOTS  # made by the REST upsert the deploy files use
    assert burst["pools"]["mlbatch_warehouse"]["include_deferred"] is True
    parse = sorted(d["last_parse_duration"] for name, d in burst["dags"].items() if name.endswith("__score"))
    figures = {
        "models": len(MODELS),
        "score_runs_wall_s": round(burst["wall_s"], 1),
        "task_instances": len(burst["tis"]),
        "pool_slots": sizes,
        "peak_concurrency": peaks,
        "label_sync_s_during_the_burst": [round(x, 1) for x in burst["sync_s"]],
        "parse_s_per_file": {"median": round(statistics.median(parse), 3), "max": round(max(parse), 3)},
    }
    print("\nfleet:", json.dumps(figures))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fleet-figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    # Every file parsed well within Airflow's dagbag_import_timeout (30 s by default).
    assert len(parse) == len(MODELS) and max(parse) < 30
    # The pools held: never more than their slots at once; and they were needed: twenty runs at
    # once filled each of them (a limit never reached would prove nothing).
    assert peaks == POOL_SLOTS, peaks
    states = {ti["state"] for ti in burst["tis"] if ti["dag_id"].endswith("__score")}
    assert states == {"success"}, states


def test_the_fleet_published_and_exported_every_model_s_day(fleet: Stack, burst: dict[str, Any]) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(fleet.env["MLBATCH_APPDB_URL"])
    try:
        with engine.connect() as conn:
            counts = {m: conn.execute(text(f"SELECT COUNT(*) FROM `{m}_predictions`")).scalar_one() for m in MODELS}
    finally:
        engine.dispose()
    assert len(set(counts.values())) == 1 and min(counts.values()) > 1000, counts  # the same table, scored alike
    with fleet.client() as api:
        for model, run_id in burst["score_runs"].items():
            assert task_states(api, f"{model}__score", run_id)["export_gate"] == "success"


def test_only_a_material_label_edit_starts_training_once_per_interval(fleet: Stack, burst: dict[str, Any]) -> None:
    by_edit = [(n, d["retrain"], d["reason"]) for n, _, d in burst["decisions"]]
    small, material, again = by_edit[:3], by_edit[3], by_edit[4]
    assert all(not retrain and reason.startswith("not material") for _, retrain, reason in small), small
    changed = int(re.match(r"material: ([\d,]+) changed rows", material[2]).group(1).replace(",", ""))
    assert material[1] and 200 <= changed <= 230, material  # the three small edits count too
    assert not again[1] and again[2].startswith("within min_interval: last training started"), again
    started = [r for r in burst["train_runs"] if r["run_type"] == "asset_triggered"]
    assert len(started) == 1, burst["train_runs"]
    # The training run was started by the material sync's asset event, which carries the reason.
    with fleet.client() as api:
        r = api.get(f"/dags/{FIRST}__train/dagRuns/{started[0]['dag_run_id']}/upstreamAssetEvents")
        r.raise_for_status()
    (event,) = r.json()["asset_events"]
    assert event["extra"]["reason"] == material[2]
    assert event["source_run_id"] == burst["decisions"][3][1]
