"""Publish stage: gated predictions into the app DB, then the day's export into the warehouse.

Everything streams in record batches from the run's prediction shards; no stage holds the day.

* ``publish``: hands the day's stream to the environment's publisher (one per app DB backend,
  :mod:`mlbatch.backends.appdb.publisher`: Aurora/MariaDB or SQLite). Either way the day and its
  ``ml_publish_log`` row land atomically, an entity's row is replaced only by a run whose ``ds``
  is the same or newer (a rerun gives the same table; a backfill never overwrites a newer
  prediction), and the day goes into ``<model>_history`` (kept ``publish.history_days``).
* ``export``: the day as parquet under ``export/<model>/<ds>/``, then the warehouse's day
  replaced in one transaction; ``export_gate`` reconciles the warehouse count (and the file's
  checksum) with the publish log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.checksum import RowChecksum
from mlbatch.backends.appdb.publisher import BATCH_ROWS, READ, Day
from mlbatch.backends.store import filesystem_for
from mlbatch.maths import gates
from mlbatch.stages.context import RunContext
from mlbatch.stages.external import WarehouseStatement
from mlbatch.stages.score import PROFILE_STATE, iter_predictions, kept_key_sample, shard_uris

log = logging.getLogger(__name__)

COLUMNS = ["entity_key", "ds", "model_version", "label", "score"]


def _day(ctx: RunContext, version: str, columns: Sequence[str] = READ) -> Iterator[pa.RecordBatch]:
    """The run's predictions; a batch from another model version is an error, not a publish."""
    for batch in iter_predictions(ctx, list(columns), BATCH_ROWS):
        if "model_version" not in columns or not batch.num_rows:
            yield batch
        elif not pc.all(pc.equal(batch.column("model_version"), version)).as_py():
            found = sorted(map(str, pc.unique(batch.column("model_version")).to_pylist()))
            raise ValueError(f"{ctx.model} {ctx.ds}: predictions hold model versions {found}, the run used {version}")
        else:
            yield batch


def publish(ctx: RunContext) -> dict[str, Any]:
    spec = ctx.spec
    version = ctx.load_state("model", "resolve the production model first")["version"]
    day = Day(
        model=spec.name,
        table=schema.predictions_table(spec.name, spec.entity.type),
        key_type=spec.entity.type,
        ds=date.fromisoformat(ctx.ds),
        model_version=version,
        run_id=ctx.run_id,
        run_key=ctx.run_key,
        rows=_shard_rows(ctx),
        read=lambda columns: _day(ctx, version, columns),
        key_sample=lambda: kept_key_sample(ctx),
        history_days=spec.publish.history_days,
        sessions=spec.publish.sessions,
        commit=spec.publish.commit,
        mode=spec.publish.mode,
    )
    published = ctx.env.publisher.publish(day)
    log.info(
        "%s: published %d predictions for %s (version %s, %s path)",
        spec.name,
        published.rows,
        ctx.ds,
        version,
        published.path,
    )
    return {"rows": published.rows, "ds": ctx.ds, "model_version": version, "path": published.path}


def _shard_rows(ctx: RunContext) -> int:
    """Rows of the run's shards (what the load must report): the prediction gate counted every row
    in its pass; without its profile (a run gated by an older mlbatch), the shards' footers."""
    profile = ctx.kept_state(PROFILE_STATE)
    if profile is not None:
        counted: int = profile["rows"]
        return counted
    rows = 0
    for uri in shard_uris(ctx):
        fs, path = filesystem_for(uri)
        with fs.open_input_file(path) as f:
            rows += pq.ParquetFile(f).metadata.num_rows
    return rows


class Export(WarehouseStatement):
    """The day's export: streamed to ``export/<model>/<ds>/part-0000.parquet`` in the worker, then
    the warehouse's day replaced in one transaction (a Redshift DELETE + COPY batch: waited for in
    the worker or the triggerer, cancelled on kill; DuckDB: in-process)."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.table = names.export_table(ctx.model)
        self.what = f"replace {self.table} ds={ctx.ds}"
        self.cost_name = "statement__score_export"

    def start(self) -> dict[str, Any] | None:
        ctx, store = self.ctx, self.ctx.env.store
        version = ctx.load_state("model", "resolve the production model first")["version"]
        key = names.export_key(ctx.model, ctx.ds)
        checksum = _write_export_file(ctx, version, key)
        ctx.save_state("export_file", {"rows": checksum.rows, "checksum": checksum.hexdigest(), "uri": store.uri(key)})
        self._started = time.monotonic()  # the warehouse's part starts here (embedded: in-process)
        return self.submit(ctx.env.warehouse.start_replace_day(self.table, ctx.ds, [store.uri(key)], store))

    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        statement_id = self.check(event)
        rows = self.ctx.env.warehouse.finish_replace_day(self.table, self.ctx.ds, statement_id)
        self.record_statement_seconds(statement_id)
        written = self.ctx.load_state("export_file", "the export file is written when the export starts")
        self.ctx.save_state("export", {**written, "warehouse_rows": rows})
        return {"rows": rows, "uri": written["uri"], "table": self.table}


def _write_export_file(ctx: RunContext, version: str, key: str) -> RowChecksum:
    """Stream the run's predictions into the export file; return their checksum."""
    store = ctx.env.store
    # Redshift's COPY reads every object under the day's prefix: nothing else may lie there.
    for stale in store.list(names.export_prefix(ctx.model, ctx.ds)):
        if stale != key:
            fs, path = filesystem_for(store.uri(stale))
            fs.delete_file(path)
    checksum = RowChecksum()
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
    table = names.export_table(ctx.model)
    exported = ctx.env.warehouse.count_day(table, ctx.ds)
    state = ctx.load_state("export", "run the export step first")
    source = f"{table} ds={ctx.ds} vs {t.name}"
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
                f"{state['uri']} vs {t.name}",
            ),
            gates.at_least("exported_rows", exported, 1),
        ],
    )
    return {"rows": exported, "passed": summary["passed"]}
