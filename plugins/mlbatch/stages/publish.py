"""Publish stage: gated predictions into the app DB, then the day's export into the warehouse.

Everything streams in record batches from the run's prediction shards; no stage holds the day.

* ``publish``: the day and its ``ml_publish_log`` row land atomically, and an entity's row is
  replaced only by a run whose ``ds`` is the same or newer (rerunning a day gives the same table;
  a backfill never overwrites a newer prediction), and the day goes into ``<model>_history``
  (kept ``publish.history_days``). MySQL/Aurora: a bulk load into a staging table, ``EXCHANGE
  PARTITION`` into the history, one guarded-upsert transaction (see :mod:`mlbatch.appdb.bulk`):
  work in proportion to the day; SQLite: the same in one streamed transaction.
* ``export``: the day as parquet under ``export/<model>/<ds>/``, then the warehouse's day
  replaced in one transaction; ``export_gate`` reconciles the warehouse count (and the file's
  checksum) with the publish log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select

from mlbatch import gates
from mlbatch.appdb import bulk, key_ranges, schema
from mlbatch.stages.context import RunContext
from mlbatch.stages.external import WarehouseStatement
from mlbatch.stages.score import iter_predictions, shard_uris
from mlbatch.store import filesystem_for

log = logging.getLogger(__name__)

COLUMNS = ["entity_key", "ds", "model_version", "label", "score"]
READ = ["entity_key", "label", "score", "model_version"]
BATCH_ROWS = 65_536
# MySQL: sessions that load the day's key ranges in parallel (the daily path; integer keys).
# The server parses and inserts a LOAD DATA on one core; two match this 2-core machine; a
# bigger Aurora instance may take more.
LOAD_SESSIONS = 2
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


@contextlib.contextmanager
def _key_ranges(ctx: RunContext, version: str, rows: int, sessions: int) -> Iterator[list[key_ranges.Session]]:
    """The day in key order, cut into ``sessions`` key ranges (:mod:`mlbatch.appdb.key_ranges`).

    One pass over the keys samples the split keys; a second pass over the rows (checking the
    model version) spills each row to its range in a temporary folder; each session then sorts
    its ranges one at a time. InnoDB appends rows that arrive in primary-key order to the end of
    its B-tree; in the scrambled order the score jobs write, every row lands on a random page
    (about 2x slower to load at 1M rows here). The ordered staging table also makes the
    backfill upsert's lookups sequential.
    """
    pieces = key_ranges.piece_count(rows, sessions)
    with tempfile.TemporaryDirectory(prefix="mlbatch-ranges-") as spill:
        with bulk.step(f"split into {pieces} key ranges", ctx.spec.predictions_table):
            keys = (b.column("entity_key") for b in iter_predictions(ctx, ["entity_key"], BATCH_ROWS))
            splits = key_ranges.split_keys(keys, rows, pieces)
            shares = key_ranges.spill_by_range(_day(ctx, version), splits, sessions, Path(spill), batch_rows=BATCH_ROWS)
        yield shares


def _counted(batches: Iterator[pa.RecordBatch], checksum: bulk.RowChecksum) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        checksum.update(batch)
        yield batch


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

    def tsv_writer(session: key_ranges.Session) -> Callable[[BinaryIO], None]:
        # The checksum is taken here, while the load runs, not in the pass before the first row.
        part = bulk.RowChecksum()

        def write(out: BinaryIO) -> None:
            with bulk.step("sorted TSV", table.name):
                for batch in _counted(session.batches(), part):
                    out.write(bulk.tsv_chunk(_tsv_columns(batch, ctx.ds)))
            with lock:
                checksum.merge(part)

        return write

    lock = threading.Lock()

    if db.dialect == "mysql" and os.environ.get(LOAD_FROM_S3_ENV) != "1":
        # The TSV streams through pipes into LOAD DATA while it is produced, a key range per
        # session (integer keys: Arrow's order is MySQL's; string keys follow the collation,
        # so they load in one session). The log row (with the checksum) is taken after the load.
        rows = _shard_rows(ctx)
        sessions = LOAD_SESSIONS if spec.entity.type == "integer" else 1
        with _key_ranges(ctx, version, rows, sessions) as shares:
            writers = [tsv_writer(share) for share in shares]
            with bulk.piped_sources(writers, [(s.key_from, s.key_to) for s in shares]) as (sources, finish):

                def log_row_after_load() -> dict[str, Any]:
                    finish()
                    return log_row()

                path = bulk.publish_mysql(
                    db, table, sources, rows, log_row_after_load, day=day, history_days=spec.publish.history_days
                )
    elif db.dialect == "mysql":
        with _s3_tsv_source(ctx) as (out, source), _key_ranges(ctx, version, _shard_rows(ctx), 1) as shares:
            tsv_writer(shares[0])(out)
            out.close()
            path = bulk.publish_mysql(
                db, table, source, checksum.rows, log_row(), history_days=spec.publish.history_days
            )
    else:

        def row_dicts() -> Iterator[list[dict[str, Any]]]:
            for batch in _counted(_day(ctx, version), checksum):
                yield [dict(r, ds=day) for r in batch.to_pylist()]

        path = bulk.publish_sqlite(db, table, row_dicts(), log_row, day, history_days=spec.publish.history_days)
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


class Export(WarehouseStatement):
    """The day's export: streamed to ``export/<model>/<ds>/part-0000.parquet`` in the worker, then
    the warehouse's day replaced in one transaction (a Redshift DELETE + COPY batch: waited for in
    the worker or the triggerer, cancelled on kill; DuckDB: in-process)."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.table = export_table(ctx)
        self.what = f"replace {self.table} ds={ctx.ds}"

    def start(self) -> dict[str, Any] | None:
        ctx, store = self.ctx, self.ctx.env.store
        version = ctx.load_state("model", "resolve the production model first")["version"]
        key = export_key(ctx)
        checksum = _write_export_file(ctx, version, key)
        ctx.save_state("export_file", {"rows": checksum.rows, "checksum": checksum.hexdigest(), "uri": store.uri(key)})
        return self.submit(ctx.env.warehouse.start_replace_day(self.table, ctx.ds, [store.uri(key)], store))

    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        statement_id = self.check(event)
        rows = self.ctx.env.warehouse.finish_replace_day(self.table, self.ctx.ds, statement_id)
        written = self.ctx.load_state("export_file", "the export file is written when the export starts")
        self.ctx.save_state("export", {**written, "warehouse_rows": rows})
        return {"rows": rows, "uri": written["uri"], "table": self.table}


def export(ctx: RunContext) -> dict[str, Any]:
    """Export the day and replace it in the warehouse, waiting in this process."""
    return Export(ctx).run()


def _write_export_file(ctx: RunContext, version: str, key: str) -> bulk.RowChecksum:
    """Stream the run's predictions into the export file; return their checksum."""
    store = ctx.env.store
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
    return checksum


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
