"""A scored run fabricated without training (prediction shards, scoring manifest, run state), and
the publish scenarios that run alike on the embedded SQLite app DB, a real MariaDB (Aurora MySQL's
stand-in) and a real PostgreSQL (Aurora PostgreSQL's)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends.env import Environment
from mlbatch.backends.warehouse.manifest import Entry, EntryMeta, Manifest, Schema
from mlbatch.spec import ModelSpec, load_spec
from mlbatch.stages.context import RunContext
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import create_engine, text

from tests.support.paths import REPO

MODEL = "pubtest"


SPEC_YAML = f"""
name: {MODEL}
owner: tests
entity: {{key: item_id, type: integer}}
labels:
  source: {{file: labels.csv}}
  columns: {{key: item_id, label: cls}}
  classes: [neg, pos]
features: {{training_sql: t.sql, scoring_sql: s.sql}}
train: {{family: xgboost, gate: {{min: 0.5}}}}
score: {{shards: 2}}
"""


def write_spec(folder: Path, extra: str = "") -> ModelSpec:
    # The spec's queries must exist and render at load; these tests never run them.
    for query in ("t.sql", "s.sql"):
        (folder / query).write_text("SELECT 1 AS item_id\n")
    path = folder / f"{MODEL}.yaml"
    path.write_text(SPEC_YAML.replace("t.sql", str(folder / "t.sql")).replace("s.sql", str(folder / "s.sql")) + extra)
    return load_spec(path)


def make_env(home: Path, appdb_url: str | None = None) -> Environment:
    return Environment(
        home=home,
        appdb_url=appdb_url or f"sqlite:///{home / 'app.db'}",
        object_store=(home / "objects").as_uri(),
        warehouse_url=f"duckdb://{home / 'warehouse.duckdb'}",
        launcher_kind="local",
        specs_dir=home,
    )


def fabricate(
    env: Environment,
    spec: ModelSpec,
    ds: str,
    keys: list,
    scores: list | None = None,
    *,
    labels: list | None = None,
    version: str = "v1",
    expected_rows: int | None = None,
) -> RunContext:
    """A scored run for ``ds``: shards as the score job writes them, its manifest and run state."""
    ctx = RunContext(env, spec, ds, f"scheduled__{ds}")
    if scores is None:
        scores = [((k * 7919) % 1000) / 1000 for k in range(len(keys))]
    if labels is None:
        labels = [None if s is None else spec.labels.classes[int(s >= 0.5)] for s in scores]
    key_type = pa.int64() if spec.entity.type == "integer" else pa.string()
    table = pa.table(
        {
            "entity_key": pa.array(keys, key_type),
            "label": pa.array(labels, pa.string()),
            "score": pa.array(scores, pa.float64()),
            "ds": pa.array([ds] * len(keys), pa.string()),
            "model_version": pa.array([version] * len(keys), pa.string()),
        }
    )
    shards = spec.score.shards
    for shard in range(shards):
        part = table.slice(shard * len(keys) // shards, (shard + 1) * len(keys) // shards - shard * len(keys) // shards)
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink, row_group_size=1000)
        env.store.put_bytes(ctx.shard_key(shard), sink.getvalue().to_pybytes())
    n = len(keys) if expected_rows is None else expected_rows
    manifest = Manifest(
        entries=[
            Entry(
                url=env.store.uri(ctx.unload_prefix("score") + "0000_part_00.parquet"),
                meta=EntryMeta(content_length=1, record_count=n),
            )
        ],
        schema=Schema(elements=[]),
        meta=EntryMeta(content_length=1, record_count=n),
    )
    env.store.put_bytes(ctx.manifest_key("score"), manifest.to_json().encode())
    ctx.save_state("model", {"version": version, "artifact_uri": "unused", "roc_auc": 0.9})
    return ctx


def run_day(ctx: RunContext) -> dict:
    predictions_gate(ctx)
    return publish(ctx)


def table_rows(env: Environment) -> list[tuple]:
    with env.appdb.connect() as conn:
        return [
            (r[0], str(r[1]), r[2], r[3], r[4])
            for r in conn.execute(
                text(f"SELECT entity_key, ds, model_version, label, score FROM {MODEL}_predictions ORDER BY entity_key")
            )
        ]


def log_rows(env: Environment) -> list[tuple]:
    with env.appdb.connect() as conn:
        return [
            (r[0], str(r[1]), r[2], r[3], r[4], r[5])
            for r in conn.execute(
                text(
                    "SELECT model, ds, model_version, rows_published, checksum, run_id FROM ml_publish_log ORDER BY ds"
                )
            )
        ]


def history_rows(env: Environment) -> list[tuple]:
    with env.appdb.connect() as conn:
        return [
            (r[0], str(r[1]), r[2], r[3])
            for r in conn.execute(
                text(f"SELECT entity_key, ds, model_version, score FROM {MODEL}_history ORDER BY entity_key, ds")
            )
        ]


def idempotent_rerun(env: Environment, spec: ModelSpec) -> None:
    ctx = fabricate(env, spec, "2026-11-20", list(range(500)))
    run_day(ctx)
    first, first_log = table_rows(env), log_rows(env)
    assert len(first) == 500 and first[0][1] == "2026-11-20"
    run_day(ctx)
    assert table_rows(env) == first
    assert [r[:5] for r in log_rows(env)] == [r[:5] for r in first_log]
    assert len(first_log) == 1 and first_log[0][3] == 500


def backfill_keeps_newer_rows(env: Environment, spec: ModelSpec) -> dict:
    run_day(fabricate(env, spec, "2026-11-22", list(range(0, 300)), [0.9] * 300, version="new"))
    result = run_day(fabricate(env, spec, "2026-11-20", list(range(200, 400)), [0.1] * 200, version="old"))
    rows = {r[0]: r for r in table_rows(env)}
    assert len(rows) == 400
    assert all(rows[k][1:3] == ("2026-11-22", "new") and rows[k][4] == 0.9 for k in range(300))  # untouched
    assert all(rows[k][1:3] == ("2026-11-20", "old") and rows[k][4] == 0.1 for k in range(300, 400))  # inserted
    assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 200), ("2026-11-22", 300)]
    return result


def newer_day_replaces_rows(env: Environment, spec: ModelSpec) -> dict:
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 300)), [0.21] * 300))
    # Same score bin and class as the day before: the distribution checks pass.
    result = run_day(fabricate(env, spec, "2026-11-21", list(range(100, 400)), [0.27] * 300, version="v2"))
    rows = {r[0]: r for r in table_rows(env)}
    assert len(rows) == 400
    assert all(rows[k][1:3] == ("2026-11-20", "v1") for k in range(100))  # not re-scored: kept
    assert all(rows[k][1:3] == ("2026-11-21", "v2") and rows[k][4] == 0.27 for k in range(100, 400))
    return result


def history_by_day_with_retention(env: Environment, folder: Path) -> None:
    """Every published day is kept per entity, a rerun replaces its day, a backfill adds one, and
    days more than ``publish.history_days`` before the newest are dropped."""
    spec = write_spec(folder, "publish: {history_days: 2}\n")
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 100)), [0.21] * 100))
    run_day(fabricate(env, spec, "2026-11-21", list(range(50, 150)), [0.27] * 100, version="v2"))
    rerun = fabricate(env, spec, "2026-11-21", list(range(50, 150)), [0.27] * 100, version="v2")
    run_day(rerun)  # idempotent: the day's rows once
    by_key: dict = {}
    for key, ds, version, score in history_rows(env):
        by_key.setdefault(key, []).append((ds, version, score))
    assert len(history_rows(env)) == 200
    assert by_key[60] == [("2026-11-20", "v1", 0.21), ("2026-11-21", "v2", 0.27)]  # an entity's predictions by day
    assert by_key[10] == [("2026-11-20", "v1", 0.21)] and by_key[120] == [("2026-11-21", "v2", 0.27)]
    # A newer day: 11-20 is now more than 2 days back from 11-22 and expires (the latest table keeps it).
    run_day(fabricate(env, spec, "2026-11-22", list(range(0, 10)), [0.24] * 10, version="v3"))
    assert sorted({r[1] for r in history_rows(env)}) == ["2026-11-21", "2026-11-22"]
    assert len(history_rows(env)) == 110
    assert {r[0]: r[1] for r in table_rows(env)}[20] == "2026-11-20"


# Where a killed publish stops, per app DB backend: (before/after, the statement's pattern).
KILL_POINTS = {
    "mysql": {
        "loaded": ("before", r"^ALTER TABLE \S+ (ADD|EXCHANGE) PARTITION"),  # the day is in the staging table
        "exchanged": ("after", r"EXCHANGE PARTITION"),  # the day is the history's partition, not yet upserted
        "in_transaction": ("after", r"^INSERT INTO \S*ml_publish_log"),  # the log row written, not committed
    },
    "postgresql": {
        # The day is in the session's TEMP stage and the transaction begun; nothing of it written.
        "loaded": ("before", r"^DELETE FROM \S*_history\b"),
        # PostgreSQL exchanges nothing: the history's day changes inside the transaction.
        "in_transaction": ("after", r"^INSERT INTO \S*ml_publish_log"),
    },
    "sqlite": {"in_transaction": ("after", r"^INSERT INTO \S*ml_publish_log")},  # one transaction, the log row last
}


def run_killed(folder: Path, env: Environment, ctx: RunContext, point: str) -> None:
    """Run publish in a child process, stop it at ``point`` and SIGKILL it there.

    The child watches its own statements from the outside (a SQLAlchemy cursor event installed
    by this script, not a hook in mlbatch): at the point's statement it says so and sleeps.
    """
    when, pattern = KILL_POINTS[env.appdb.dialect][point]
    script = textwrap.dedent(
        f"""
        import re, sys, time
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from mlbatch.backends.env import Environment
        from mlbatch.spec import load_spec
        from mlbatch.stages.context import RunContext
        from mlbatch.stages.publish import publish

        def pause(conn, cursor, statement, *args):
            if re.search({pattern!r}, statement):
                print("paused at {point}", file=sys.stderr, flush=True)
                time.sleep(3600)

        event.listen(Engine, "{when}_cursor_execute", pause)
        publish(RunContext(Environment.from_env(), load_spec({str(folder / f"{MODEL}.yaml")!r}), {ctx.ds!r}, {ctx.run_id!r}))
        """
    )
    import os

    child_env = {
        **os.environ,
        "MLBATCH_HOME": str(env.home),
        "MLBATCH_APPDB_URL": env.appdb_url,
        "MLBATCH_OBJECT_STORE": env.object_store,
        "MLBATCH_WAREHOUSE": env.warehouse_url,
        "TMPDIR": str(folder),  # the killed child leaves its TSV there, not in /tmp
        "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}",
    }
    proc = subprocess.Popen([sys.executable, "-c", script], env=child_env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if f"paused at {point}" in line:
                break
        else:
            raise AssertionError(f"publish never reached {point!r}:\n{''.join(lines)}")
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def tables(env) -> set[str]:
    """The database's tables; on PostgreSQL a partitioned table's partitions are not listed (they
    are the history's days, as MySQL's partitions are)."""
    with env.appdb.connect() as conn:
        if conn.dialect.name == "postgresql":
            listed = conn.execute(
                text(
                    "SELECT relname FROM pg_class WHERE relnamespace = CAST(current_schema() AS regnamespace) "
                    "AND relkind IN ('r', 'p') AND NOT relispartition"
                )
            )
            return {r[0] for r in listed}
        return {r[0] for r in conn.execute(text("SHOW TABLES"))}


def history_partitions(env) -> list[str]:
    """The days the history has a partition for (MySQL's ``p_none``, the partition a table
    needs to exist, left out), in order."""
    with env.appdb.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(
                text(
                    "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = CAST(:t AS regclass)"
                ),
                {"t": f"{MODEL}_history"},
            )
            return sorted(re.search(r"'(\d{4}-\d{2}-\d{2})'", r[0]).group(1) for r in rows)
        rows = conn.execute(
            text(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = :t AND PARTITION_NAME <> 'p_none'"
            ),
            {"t": f"{MODEL}_history"},
        )
        return sorted(f"{r[0][1:5]}-{r[0][5:7]}-{r[0][7:9]}" for r in rows)


class Blocker:
    """Another application session with a transaction left open (REPEATABLE READ, MySQL's default:
    on PostgreSQL too, so the transaction keeps the snapshot of its first statement)."""

    def __init__(self, url: str, statement: str):
        self.engine = create_engine(url, isolation_level="REPEATABLE READ")
        self.conn = self.engine.connect()
        session = "SELECT pg_backend_pid()" if self.engine.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
        self.id = self.conn.execute(text(session)).scalar_one()
        self.conn.execute(text(statement))  # SQLAlchemy began a transaction: it stays open

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()
        self.engine.dispose()


def aurora_env(folder: Path, appdb_url: str, monkeypatch, bucket: str) -> tuple[Environment, list[str]]:
    """An environment that publishes as Aurora does with MLBATCH_AURORA_LOAD_FROM_S3=1, and the
    list of S3 objects its loads read. MariaDB has no ``LOAD DATA FROM S3``: the double fetches
    the object Aurora would read and has the server read it (``LOAD DATA INFILE``, no LOCAL: the
    session needs no client file access, and the server's FILE privilege stands for Aurora's
    AWS_LOAD_S3_ACCESS, so a role can grant it). Needs the ``s3_env`` fixture."""
    import dataclasses

    import boto3
    from mlbatch.backends.appdb.mysql_load import LoadSource
    from mlbatch.backends.appdb.mysql_sql import load_data_sql

    boto3.client("s3").create_bucket(Bucket=bucket)
    env = dataclasses.replace(make_env(folder, appdb_url), object_store=f"s3://{bucket}/root", appdb_load_from_s3=True)
    loaded_from: list[str] = []

    def load_as_aurora(self, conn, table):
        assert self.path is None and self.s3_uri is not None
        loaded_from.append(self.s3_uri)
        local = folder / f"fetched-{len(loaded_from)}.tsv"
        local.write_bytes(env.store.get_bytes(env.store.key(self.s3_uri)))
        local.chmod(0o644)  # the server reads it
        sql = load_data_sql(table).replace("LOAD DATA LOCAL INFILE", "LOAD DATA INFILE", 1)
        return conn.exec_driver_sql(sql, (str(local),)).rowcount

    monkeypatch.setattr(LoadSource, "load", load_as_aurora)
    return env, loaded_from


CONTEXT = {"params": {}, "ti": SimpleNamespace(map_index=-1)}


class PublishTask:
    """The publish step's StageOperator running in a thread, as in a worker; ``op.on_kill()`` is
    what the task runner's SIGTERM handler (or the timeout) calls."""

    def __init__(self, ctx: Any, monkeypatch: pytest.MonkeyPatch):
        from mlbatch.airflow import operators  # Airflow's SDK: only the stop tests pay for importing it

        monkeypatch.setattr(operators, "run_context", lambda spec_path, context: ctx)
        self.op = operators.StageOperator(task_id="publish", spec_path="unused.yaml", target="publish:publish")
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="publish-task", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.op.execute(CONTEXT)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc


def wait_for(what: str, condition: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        time.sleep(0.1)
