"""Publish stage: gated predictions into the app DB, then the day's export into the warehouse.

The app DB write is one transaction: every prediction of the day plus its publish-log row, or
nothing. A row is replaced only by a run whose ``ds`` is the same or newer, so rerunning a day
gives the same table and a backfill never overwrites a newer prediction. The warehouse export
replaces the day in one transaction and is reconciled against the published count.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from mlbatch import gates
from mlbatch.appdb import schema
from mlbatch.stages.context import RunContext
from mlbatch.stages.score import read_predictions

log = logging.getLogger(__name__)

COLUMNS = ["entity_key", "ds", "model_version", "label", "score"]
CHUNK = 10_000


def checksum(t: pa.Table) -> str:
    """Order-independent fingerprint of a day's predictions (key, label, score)."""
    t = t.select(["entity_key", "label", "score"]).sort_by("entity_key")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def publish(ctx: RunContext) -> dict[str, Any]:
    db, spec = ctx.env.appdb, ctx.spec
    t = read_predictions(ctx, ["entity_key", "label", "score", "model_version"])
    versions = set(t["model_version"].to_pylist())
    (version,) = versions  # the predictions gate has checked there is exactly one
    db.ensure_schema([(spec.name, spec.entity.type)])
    table = schema.predictions_table(spec.name, spec.entity.type)
    day = date.fromisoformat(ctx.ds)
    with db.begin() as conn:
        for batch in t.to_batches(CHUNK):
            rows = [dict(r, ds=day) for r in batch.to_pylist()]
            db.upsert(conn, table, rows, update=["ds", "model_version", "label", "score"], newer_than="ds")
        db.upsert(
            conn,
            schema.publish_log,
            [
                {
                    "model": spec.name,
                    "ds": day,
                    "model_version": version,
                    "rows_published": t.num_rows,
                    "checksum": checksum(t),
                    "run_id": ctx.run_id,
                    "published_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
                }
            ],
            update=["model_version", "rows_published", "checksum", "run_id", "published_at"],
        )
    log.info("%s: published %d predictions for %s (version %s)", spec.name, t.num_rows, ctx.ds, version)
    return {"rows": t.num_rows, "ds": ctx.ds, "model_version": version}


def export_table(ctx: RunContext) -> str:
    return f"ml_exports.{ctx.model}_predictions"


def export(ctx: RunContext) -> dict[str, Any]:
    """Write the day to ``export/<model>/<ds>/`` and replace that day in the warehouse."""
    store = ctx.env.store
    t = read_predictions(ctx, ["entity_key", "label", "score", "model_version"])
    t = t.append_column("ds", pa.array([ctx.ds] * t.num_rows, pa.string())).select(COLUMNS)
    key = f"export/{ctx.model}/{ctx.ds}/part-0000.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    uri = store.put_bytes(key, sink.getvalue().to_pybytes())
    rows = ctx.env.warehouse.replace_day(export_table(ctx), ctx.ds, [uri], store)
    return {"rows": rows, "uri": uri, "table": export_table(ctx)}


def export_gate(ctx: RunContext) -> dict[str, Any]:
    t = schema.publish_log
    with ctx.env.appdb.connect() as conn:
        published = conn.execute(
            select(t.c.rows_published).where(t.c.model == ctx.model, t.c.ds == date.fromisoformat(ctx.ds))
        ).scalar()
    exported = ctx.env.warehouse.count_day(export_table(ctx), ctx.ds)
    summary = gates.evaluate(
        f"{ctx.model}.export",
        [
            gates.equal(
                "exported_rows_equal_published",
                exported,
                published,
                f"{export_table(ctx)} ds={ctx.ds} vs ml_publish_log",
            ),
            gates.at_least("exported_rows", exported, 1),
        ],
    )
    return {"rows": exported, "passed": summary["passed"]}
