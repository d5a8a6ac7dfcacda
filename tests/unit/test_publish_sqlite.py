"""Publish and export on the embedded stack (SQLite app DB, DuckDB warehouse, local object store).

The helpers here fabricate a scored run (prediction shards, scoring manifest, run state) without
training; tests/integration/test_publish_mariadb.py runs the same scenarios on a real MariaDB.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.env import Environment
from mlbatch.features.manifest import Entry, EntryMeta, Manifest, Schema
from mlbatch.spec import ModelSpec, load_spec
from mlbatch.stages.context import RunContext
from mlbatch.stages.publish import export, export_gate, publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[2]
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


# Shared scenarios (run on SQLite here and on MariaDB in tests/integration) ------------------------
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


def test_history_by_day_with_retention_sqlite(tmp_path):
    history_by_day_with_retention(make_env(tmp_path), tmp_path)


def test_idempotent_rerun_sqlite(tmp_path):
    idempotent_rerun(make_env(tmp_path), write_spec(tmp_path))


def test_backfill_keeps_newer_rows_sqlite(tmp_path):
    assert backfill_keeps_newer_rows(make_env(tmp_path), write_spec(tmp_path))["path"] == "upsert"


def test_newer_day_replaces_rows_sqlite(tmp_path):
    newer_day_replaces_rows(make_env(tmp_path), write_spec(tmp_path))


def test_string_keys_and_awkward_text_sqlite(tmp_path):
    spec = write_spec(tmp_path, "")
    spec = spec.model_copy(update={"entity": spec.entity.model_copy(update={"type": "string"})})
    env = make_env(tmp_path)
    keys = ["a\tb", "line\nbreak", "back\\slash", "\\N", "é ü 漢字", "plain"]
    run_day(fabricate(env, spec, "2026-11-20", keys, [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]))
    assert sorted(r[0] for r in table_rows(env)) == sorted(keys)


def test_killed_sqlite_publish_leaves_tables_as_they_were(tmp_path):
    spec, env = write_spec(tmp_path), make_env(tmp_path)
    run_day(fabricate(env, spec, "2026-11-20", list(range(300)), [0.21] * 300))
    before, before_log = table_rows(env), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(300)), [0.27] * 300)
    predictions_gate(ctx)
    env.appdb.dispose()
    run_killed(tmp_path, env, ctx, "in_transaction")
    assert table_rows(env) == before and log_rows(env) == before_log
    publish(ctx)
    assert {r[1] for r in table_rows(env)} == {"2026-11-21"}


# Where run_killed stops a publish: a statement it sees go to the app DB, before or after it runs.
KILL_POINTS = {
    "loaded": ("before", r"^ALTER TABLE \S+ (ADD|EXCHANGE) PARTITION"),  # the day is in the staging table
    "exchanged": ("after", r"EXCHANGE PARTITION"),  # the day is the history's partition, not yet upserted
    "in_transaction": ("after", r"^INSERT INTO \S*ml_publish_log"),  # the log row written, not committed
}


def run_killed(folder: Path, env: Environment, ctx: RunContext, point: str) -> None:
    """Run publish in a child process, stop it at ``point`` and SIGKILL it there.

    The child watches its own statements from the outside (a SQLAlchemy cursor event installed
    by this script, not a hook in mlbatch): at the point's statement it says so and sleeps.
    """
    when, pattern = KILL_POINTS[point]
    script = textwrap.dedent(
        f"""
        import re, sys, time
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from mlbatch.env import Environment
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


def test_export_streams_the_day_and_reconciles(tmp_path):
    spec, env = write_spec(tmp_path), make_env(tmp_path)
    ctx = fabricate(env, spec, "2026-11-20", list(range(1000)))
    run_day(ctx)
    assert export(ctx)["rows"] == 1000
    assert export_gate(ctx)["passed"] == 3
    # A rerun replaces the day; another day sits beside it.
    export(ctx)
    other = fabricate(env, spec, "2026-11-21", list(range(10)))
    publish(other)
    export(other)
    assert env.warehouse.query(
        f"SELECT ds::VARCHAR, count(*) FROM ml_exports.{MODEL}_predictions GROUP BY 1 ORDER BY 1"
    ) == [("2026-11-20", 1000), ("2026-11-21", 10)]
    exported = pq.read_table(env.store.uri(f"export/{MODEL}/2026-11-20/part-0000.parquet").removeprefix("file://"))
    assert exported.column_names == ["entity_key", "ds", "model_version", "label", "score"]
    assert exported.schema.field("ds").type == pa.date32()
    assert env.store.list(f"export/{MODEL}/2026-11-20/") == [f"export/{MODEL}/2026-11-20/part-0000.parquet"]


def test_export_gate_blocks_when_the_warehouse_day_differs(tmp_path):
    spec, env = write_spec(tmp_path), make_env(tmp_path)
    ctx = fabricate(env, spec, "2026-11-20", list(range(100)))
    run_day(ctx)
    export(ctx)
    env.warehouse.execute(f"DELETE FROM ml_exports.{MODEL}_predictions WHERE entity_key < 5")
    from mlbatch.gates import GateFailed

    with pytest.raises(GateFailed, match=r"exported_rows_equal_published: observed 95, threshold == 100"):
        export_gate(ctx)


def test_checksum_ignores_order_and_batches_but_not_content():
    from mlbatch.appdb.checksum import RowChecksum

    rng = np.random.default_rng(1)
    t = pa.table({"entity_key": np.arange(5000), "label": ["a", "bb"] * 2500, "score": rng.random(5000)})

    def digest(*parts: pa.Table) -> str:
        c = RowChecksum()
        for p in parts:
            for b in p.to_batches(max_chunksize=777):
                c.update(b)
        return c.hexdigest()

    whole = digest(t)
    assert digest(t.take(rng.permutation(5000))) == whole
    assert digest(t.slice(3000), t.slice(0, 3000)) == whole
    changed = t.set_column(2, "score", pa.array(np.where(np.arange(5000) == 7, 0.5, t["score"].to_numpy())))
    assert digest(changed) != whole
    assert digest(t.slice(1)) != whole
    relabelled = t.set_column(1, "label", pa.array(["a", "bb"] * 2499 + ["bb", "a"]))
    assert digest(relabelled) != whole
    # Checksums of parts (the parallel load sessions' key ranges) merge into the whole's.
    merged, part = RowChecksum(), RowChecksum()
    merged.update(t.slice(0, 1234))
    part.update(t.slice(1234))
    merged.merge(part)
    assert (merged.rows, merged.hexdigest()) == (5000, whole)
    with pytest.raises(ValueError, match="cannot merge"):
        merged.merge(RowChecksum(["entity_key"]))


def test_sqlite_file_is_untouched_by_a_blocked_gate(tmp_path):
    spec, env = write_spec(tmp_path), make_env(tmp_path)
    ctx = fabricate(env, spec, "2026-11-20", list(range(100)), expected_rows=101)
    from mlbatch.gates import GateFailed

    with pytest.raises(GateFailed):
        predictions_gate(ctx)
    assert (
        not (tmp_path / "app.db").exists()
        or not sqlite3.connect(tmp_path / "app.db")
        .execute("SELECT name FROM sqlite_master WHERE name LIKE '%predictions'")
        .fetchall()
    )
