"""Publish and export on the embedded stack (SQLite app DB, DuckDB warehouse, local object store).

The helpers of tests/support/publish.py fabricate a scored run (prediction shards, scoring
manifest, run state) without training; tests/integration/publish/test_mariadb.py runs the
same scenarios on a real MariaDB.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.stages.publish import Export, export_gate, publish
from mlbatch.stages.score import predictions_gate

from tests.support.publish import (
    MODEL,
    backfill_keeps_newer_rows,
    fabricate,
    history_by_day_with_retention,
    idempotent_rerun,
    log_rows,
    make_env,
    newer_day_replaces_rows,
    run_day,
    run_killed,
    table_rows,
    write_spec,
)

# Shared scenarios (run on SQLite here and on MariaDB in tests/integration) ------------------------


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


def test_export_streams_the_day_and_reconciles(tmp_path):
    spec, env = write_spec(tmp_path), make_env(tmp_path)
    ctx = fabricate(env, spec, "2026-11-20", list(range(1000)))
    run_day(ctx)
    assert Export(ctx).run()["rows"] == 1000
    assert export_gate(ctx)["passed"] == 3
    # A rerun replaces the day; another day sits beside it.
    Export(ctx).run()
    other = fabricate(env, spec, "2026-11-21", list(range(10)))
    publish(other)
    Export(other).run()
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
    Export(ctx).run()
    env.warehouse.execute(f"DELETE FROM ml_exports.{MODEL}_predictions WHERE entity_key < 5")
    from mlbatch.maths.gates import GateFailed

    with pytest.raises(GateFailed, match=r"exported_rows_equal_published: observed 95, threshold == 100"):
        export_gate(ctx)


def test_checksum_ignores_order_and_batches_but_not_content():
    from mlbatch.backends.appdb.checksum import RowChecksum

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
    from mlbatch.maths.gates import GateFailed

    with pytest.raises(GateFailed):
        predictions_gate(ctx)
    assert (
        not (tmp_path / "app.db").exists()
        or not sqlite3.connect(tmp_path / "app.db")
        .execute("SELECT name FROM sqlite_master WHERE name LIKE '%predictions'")
        .fetchall()
    )
