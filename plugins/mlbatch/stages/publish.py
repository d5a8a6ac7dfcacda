"""Publish stage: gated predictions into the app DB, then the day's export into the warehouse.

Everything streams in record batches from the run's prediction shards; no stage holds the day.

* ``publish``: the day and its ``ml_publish_log`` row land atomically, and an entity's row is
  replaced only by a run whose ``ds`` is the same or newer (rerunning a day gives the same table;
  a backfill never overwrites a newer prediction). MySQL/Aurora: a bulk load and, for the newest
  day, one atomic table swap (see :mod:`mlbatch.appdb.bulk`); SQLite: a streamed guarded upsert.
* ``export``: the day as parquet under ``export/<model>/<ds>/``, then the warehouse's day
  replaced in one transaction; ``export_gate`` reconciles the warehouse count (and the file's
  checksum) with the publish log.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select

from mlbatch import gates
from mlbatch.appdb import bulk, schema
from mlbatch.stages.context import RunContext
from mlbatch.stages.score import iter_predictions, shard_uris
from mlbatch.store import filesystem_for

log = logging.getLogger(__name__)

COLUMNS = ["entity_key", "ds", "model_version", "label", "score"]
READ = ["entity_key", "label", "score", "model_version"]
BATCH_ROWS = 65_536
SORT_MEMORY_LIMIT = "256MB"  # DuckDB spills the sort to a temp folder beyond this
# Aurora only: load the TSV from the object store with LOAD DATA FROM S3 (the cluster needs an
# IAM role for S3, aws_default_s3_role) instead of streaming it from the worker.
LOAD_FROM_S3_ENV = "MLBATCH_AURORA_LOAD_FROM_S3"


def _day(ctx: RunContext, version: str) -> Iterator[pa.RecordBatch]:
    """The run's predictions; a batch from another model version is an error, not a publish."""
    for batch in iter_predictions(ctx, READ, BATCH_ROWS):
        if batch.num_rows and not pc.all(pc.equal(batch.column("model_version"), version)).as_py():
            found = sorted(map(str, pc.unique(batch.column("model_version")).to_pylist()))
            raise ValueError(f"{ctx.model} {ctx.ds}: predictions hold model versions {found}, the run used {version}")
        yield batch


def _by_key(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches again, ordered by key: DuckDB sorts out of core, under a memory limit.

    InnoDB appends rows that arrive in primary-key order to the end of its B-tree; in the
    scrambled order the score jobs write, every row lands on a random page (about 2x slower to
    load at 1M rows here). The ordered staging table also makes the backfill upsert's lookups
    sequential.
    """
    import duckdb

    first = next(batches, None)
    if first is None:
        return
    with tempfile.TemporaryDirectory(prefix="mlbatch-sort-") as spill, duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{SORT_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.register("day", pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches)))
        cols = ", ".join(f'"{c}"' for c in first.schema.names)
        yield from con.sql(f"SELECT {cols} FROM day ORDER BY entity_key").to_arrow_reader(BATCH_ROWS)


def _tsv_columns(batch: pa.RecordBatch, ds: str) -> list[pa.Array]:
    day = pa.repeat(pa.scalar(ds), batch.num_rows)
    return [
        batch.column("entity_key"),
        day,
        batch.column("model_version"),
        batch.column("label"),
        batch.column("score"),
    ]


def publish(ctx: RunContext) -> dict[str, Any]:
    db, spec = ctx.env.appdb, ctx.spec
    version = ctx.load_state("model", "resolve the production model first")["version"]
    db.ensure_schema([(spec.name, spec.entity.type)])
    table = schema.predictions_table(spec.name, spec.entity.type)
    day = date.fromisoformat(ctx.ds)
    checksum = bulk.RowChecksum()

    def log_row() -> dict[str, Any]:
        return {
            "model": spec.name,
            "ds": day,
            "model_version": version,
            "rows_published": checksum.rows,
            "checksum": checksum.hexdigest(),
            "run_id": ctx.run_id,
            "published_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        }

    def write_tsv(out: BinaryIO) -> None:
        with bulk.step("sorted TSV", table.name):
            for batch in _by_key(_day(ctx, version)):
                checksum.update(batch)
                out.write(bulk.tsv_chunk(_tsv_columns(batch, ctx.ds)))

    if db.dialect == "mysql" and os.environ.get(LOAD_FROM_S3_ENV) != "1":
        # The TSV streams through a pipe into LOAD DATA while it is produced; the log row (with
        # the checksum) is taken after the load, once the writer has finished.
        with bulk.piped_source(write_tsv) as (source, finish):

            def log_row_after_load() -> dict[str, Any]:
                finish()
                return log_row()

            path = bulk.publish_mysql(db, table, source, _shard_rows(ctx), log_row_after_load, day=day)
    elif db.dialect == "mysql":
        with _s3_tsv_source(ctx) as (out, source):
            write_tsv(out)
            out.close()
            path = bulk.publish_mysql(db, table, source, checksum.rows, log_row())
    else:

        def rows() -> Iterator[list[dict[str, Any]]]:
            for batch in _day(ctx, version):
                checksum.update(batch)
                yield [dict(r, ds=day) for r in batch.to_pylist()]

        path = bulk.publish_sqlite(db, table, rows(), log_row)
    log.info(
        "%s: published %d predictions for %s (version %s, %s path)", spec.name, checksum.rows, ctx.ds, version, path
    )
    return {"rows": checksum.rows, "ds": ctx.ds, "model_version": version, "path": path}


def _shard_rows(ctx: RunContext) -> int:
    """Rows of the run's shards, from their parquet footers (what the load must report)."""
    rows = 0
    for uri in shard_uris(ctx):
        fs, path = filesystem_for(uri)
        with fs.open_input_file(path) as f:
            rows += pq.ParquetFile(f).metadata.num_rows
    return rows


@contextlib.contextmanager
def _s3_tsv_source(ctx: RunContext) -> Iterator[tuple[BinaryIO, bulk.LoadSource]]:
    """Aurora's LOAD DATA FROM S3: the day's TSV is written to the object store first."""
    store = ctx.env.store
    if store.is_local:
        raise ValueError(f"{LOAD_FROM_S3_ENV}=1 needs an s3:// object store, not {store.root}")
    key = f"publish/{ctx.model}/{ctx.ds}/{ctx.run_key}/predictions.tsv"
    fs, path = filesystem_for(store.uri(key))
    try:
        with fs.open_output_stream(path) as out:
            yield out, bulk.LoadSource(s3_uri=store.uri(key))  # type: ignore[misc]
    finally:
        with contextlib.suppress(OSError):
            fs.delete_file(path)


def export_table(ctx: RunContext) -> str:
    return f"ml_exports.{ctx.model}_predictions"


def export_key(ctx: RunContext) -> str:
    return f"export/{ctx.model}/{ctx.ds}/part-0000.parquet"


def export(ctx: RunContext) -> dict[str, Any]:
    """Stream the day to ``export/<model>/<ds>/part-0000.parquet`` and replace that day in the warehouse."""
    store = ctx.env.store
    version = ctx.load_state("model", "resolve the production model first")["version"]
    key = export_key(ctx)
    # Redshift's COPY reads every object under the day's prefix: nothing else may lie there.
    for stale in store.list(key.rsplit("/", 1)[0] + "/"):
        if stale != key:
            fs, path = filesystem_for(store.uri(stale))
            fs.delete_file(path)
    checksum = bulk.RowChecksum()
    day = pa.scalar(date.fromisoformat(ctx.ds), pa.date32())
    writer: pq.ParquetWriter | None = None
    with store.open_output(key) as sink:
        try:
            for batch in _day(ctx, version):
                # Column order = the warehouse table's: COPY ... FORMAT AS PARQUET maps by position.
                out = pa.record_batch(
                    [
                        batch["entity_key"],
                        pa.repeat(day, batch.num_rows),
                        batch["model_version"],
                        batch["label"],
                        batch["score"],
                    ],
                    names=COLUMNS,
                )
                if writer is None:
                    writer = pq.ParquetWriter(sink, out.schema, compression="snappy")
                writer.write_batch(out)
                checksum.update(batch)
            if writer is None:
                raise ValueError(f"{ctx.model} {ctx.ds}: the run's prediction shards hold no batches to export")
        finally:
            if writer is not None:
                writer.close()
    uri = store.uri(key)
    rows = ctx.env.warehouse.replace_day(export_table(ctx), ctx.ds, [uri], store)
    state = {"rows": checksum.rows, "checksum": checksum.hexdigest(), "uri": uri, "warehouse_rows": rows}
    ctx.save_state("export", state)
    return {"rows": rows, "uri": uri, "table": export_table(ctx)}


def export_gate(ctx: RunContext) -> dict[str, Any]:
    t = schema.publish_log
    with ctx.env.appdb.connect() as conn:
        published = conn.execute(
            select(t.c.rows_published, t.c.checksum).where(t.c.model == ctx.model, t.c.ds == date.fromisoformat(ctx.ds))
        ).first()
    exported = ctx.env.warehouse.count_day(export_table(ctx), ctx.ds)
    state = ctx.load_state("export", "run the export step first")
    source = f"{export_table(ctx)} ds={ctx.ds} vs ml_publish_log"
    summary = gates.evaluate(
        f"{ctx.model}.export",
        [
            gates.equal(
                "exported_rows_equal_published", exported, published.rows_published if published else None, source
            ),
            gates.equal(
                "export_checksum_equal_published",
                state["checksum"],
                published.checksum if published else None,
                f"{state['uri']} vs ml_publish_log",
            ),
            gates.at_least("exported_rows", exported, 1),
        ],
    )
    return {"rows": exported, "passed": summary["passed"]}
