"""Labels stage: sheet → check → gate → diff-apply → snapshot.

``check_sheet`` reads the sheet once, checks every row, writes the verdicts back for the
analyst and stages the accepted labels; ``labels_gate`` blocks a bad sheet before anything is
applied; ``apply_labels`` writes only the difference in one transaction and, when something
changed, a parquet snapshot that training reads (so a model names the exact labels it saw).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.labels import sync
from mlbatch.labels.check import CheckReport, check_labels
from mlbatch.labels.grid import SheetData
from mlbatch.labels.source import read_sheet, write_verdicts
from mlbatch.maths import gates
from mlbatch.spec import ModelSpec
from mlbatch.spec.runparams import DRY_RUN
from mlbatch.stages.context import RunContext

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def new_sync_id(ctx: RunContext, started: datetime) -> str:
    """Every check of the sheet is a sync of its own, logged even when nothing changes."""
    return f"{ctx.model}-{started:%Y%m%dT%H%M%S}-{ctx.run_key[-6:]}"


def _record_sync(conn: Connection, values: dict[str, Any]) -> None:
    """Insert or update this run's sync log row (a retry updates, never duplicates)."""
    t = schema.label_syncs
    exists = conn.execute(select(t.c.sync_id).where(t.c.sync_id == values["sync_id"])).first()
    if exists:
        conn.execute(t.update().where(t.c.sync_id == values["sync_id"]).values(**values))
    else:
        conn.execute(t.insert().values(**values))


def check(spec: ModelSpec, sheet: SheetData, max_invalid_fraction: float | None = None) -> CheckReport:
    """The sheet against the spec: the one checker of the sync and ``mlbatch labels check``
    (which may override the spec's threshold)."""
    if max_invalid_fraction is None:
        max_invalid_fraction = spec.labels.max_invalid_fraction
    return check_labels(
        sheet.header,
        sheet.rows,
        model=spec.name,
        key_column=spec.labels.columns.key,
        label_column=spec.labels.columns.label,
        classes=spec.labels.classes,
        key_type=spec.entity.type,
        max_invalid_fraction=max_invalid_fraction,
        ignore_column=spec.labels.write_back,
    )


def check_sheet(ctx: RunContext) -> dict[str, Any]:
    spec, env = ctx.spec, ctx.env
    started = _now()
    sid = new_sync_id(ctx, started)
    sheet = read_sheet(spec, env)
    report = check(spec, sheet)
    log.info("%s: %s (%s)", spec.name, report.message, sheet.origin)
    for r in report.rejected[:50]:
        log.info("row %d key %r: %s", r.row, r.key, r.reason)
    # A dry run (Airflow param) checks and gates but writes nothing the analyst or Aurora sees:
    # only this run's scratch state in the object store.
    dry_run = bool(DRY_RUN.get(ctx.params))
    written = 0 if dry_run else write_verdicts(spec, env, sheet, report.verdicts)
    labels = {str(k): v for k, v in report.labels.items()}
    staged_key = names.staged_labels_key(spec.name, sid)
    _write_labels(ctx, staged_key, labels)
    if not dry_run:
        env.appdb.ensure_schema()
        with env.appdb.begin() as conn:
            _record_sync(
                conn,
                {
                    "sync_id": sid,
                    "model": spec.name,
                    "started_at": started,
                    "finished_at": _now() if report.blocked else None,
                    "rows_read": report.rows,
                    "accepted": report.accepted,
                    "rejected": len(report.rejected),
                    "content_hash": sync.labels_hash(labels),
                    "verdict": "blocked" if report.blocked else "checked",
                    "message": report.message,
                },
            )
    result = {
        **report.to_contract(),
        "sync_id": sid,
        "staged_uri": env.store.uri(staged_key),
        "verdicts_written": written,
        "origin": sheet.origin,
        DRY_RUN.name: dry_run,
    }
    ctx.save_state("labels_check", result)
    return {k: v for k, v in result.items() if k != "rejected"} | {"rejected": len(report.rejected)}


def labels_gate(ctx: RunContext) -> dict[str, Any]:
    st = ctx.load_state("labels_check", "run the labels check first")
    rows, rejected = st["rows"], len(st["rejected"])
    fraction = rejected / rows if rows else 1.0
    checks = [
        gates.at_least("data_rows", rows, 1, st["origin"]),
        gates.at_most(
            "invalid_fraction", fraction, ctx.spec.labels.max_invalid_fraction, f"{rejected} of {rows} rows rejected"
        ),
        gates.at_least("accepted_labels", st["accepted"], ctx.spec.labels.min_rows),
        gates.equal("sheet_blocked", st["blocked"], False, st["message"]),
    ]
    try:
        return gates.evaluate(f"{ctx.model}.labels", checks)
    except gates.GateFailed as exc:
        if st.get(DRY_RUN.name):
            raise
        # The sync log says why this sync stopped, whichever check it was.
        with ctx.env.appdb.begin() as conn:
            _record_sync(
                conn, {"sync_id": st["sync_id"], "finished_at": _now(), "verdict": "blocked", "message": str(exc)}
            )
        raise


def _write_labels(ctx: RunContext, key: str, labels: dict[str, str]) -> str:
    keys: list[Any] = list(labels)
    key_type = pa.int64() if ctx.spec.entity.type == "integer" else pa.string()
    if ctx.spec.entity.type == "integer":
        keys = [int(k) for k in keys]
    table = pa.table({"entity_key": pa.array(keys, key_type), "label": pa.array(list(labels.values()), pa.string())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return ctx.env.store.put_bytes(key, sink.getvalue().to_pybytes())


def _read_labels(ctx: RunContext, uri: str) -> dict[str, str]:
    table = pq.read_table(pa.BufferReader(ctx.env.store.get_bytes(ctx.env.store.key(uri))))
    return {str(k): v for k, v in zip(table["entity_key"].to_pylist(), table["label"].to_pylist(), strict=True)}


def delete_guard(spec: ModelSpec, current: int, deletes: int) -> gates.Check:
    """A sheet that lost many rows (a filter left on, a bad paste) must not wipe the labels."""
    fraction = deletes / current if current else 0.0
    return gates.at_most(
        "delete_fraction",
        fraction,
        spec.labels.max_delete_fraction,
        f"the sheet would delete {deletes:,} of {current:,} current labels; "
        "if that is intended, raise labels.max_delete_fraction for one sync",
    )


def apply_labels(ctx: RunContext) -> dict[str, Any]:
    spec, env = ctx.spec, ctx.env
    st = ctx.load_state("labels_check", "run the labels check first")
    desired = _read_labels(ctx, st["staged_uri"])
    sid = st["sync_id"]
    with env.appdb.begin() as conn:
        done = conn.execute(select(schema.label_syncs).where(schema.label_syncs.c.sync_id == sid)).first()
        if done is not None and done.verdict in ("applied", "no_change"):
            log.info("%s: sync %s was already applied by an earlier attempt", spec.name, sid)
            return {
                "sync_id": sid,
                "changed": done.verdict == "applied",
                "inserted": done.inserted,
                "updated": done.updated,
                "deleted": done.deleted,
                "labels": len(desired),
            }
        current = sync.current_labels(conn, spec.name)
        d = sync.diff(current, desired)
        guard = delete_guard(spec, len(current), len(d.deletes))
        if not guard.ok:
            blocked = gates.GateFailed(f"{spec.name}.labels", [guard])
            log.error("%s: %s", spec.name, blocked)
            _record_sync(conn, {"sync_id": sid, "finished_at": _now(), "verdict": "blocked", "message": str(blocked)})
        elif d.changed == 0:
            log.info("%s: no change (%d labels)", spec.name, len(current))
            _record_sync(
                conn,
                {"sync_id": sid, "finished_at": _now(), "verdict": "no_change", "message": "no change", **d.summary()},
            )
            blocked = None
        else:
            now = _now()
            sync.apply(conn, spec.name, d, sid, now)
            snapshot = _write_labels(ctx, names.labels_snapshot_key(spec.name, sid), desired)
            _record_sync(
                conn,
                {
                    "sync_id": sid,
                    "finished_at": now,
                    "verdict": "applied",
                    "message": f"applied {d.summary()}",
                    "snapshot_uri": snapshot,
                    **d.summary(),
                },
            )
            log.info("%s: applied %s; snapshot %s", spec.name, d.summary(), snapshot)
            blocked = None
    if blocked is not None:
        raise blocked
    return {"sync_id": sid, "changed": d.changed > 0, **d.summary(), "labels": len(desired)}


def _ordered(keys: list[str], integer: bool) -> list[str]:
    return sorted(keys, key=int) if integer else sorted(keys)


def preview(ctx: RunContext, limit: int = 20) -> dict[str, Any]:
    """What a sync would do now, writing nothing: no verdicts, no sync log, no label rows.

    Reads the sheet (one read) and the model's current labels, and returns the check, the
    diff counts, the first ``limit`` keys of each kind (old -> new label) and whether the label
    gate or the delete guard would block it.
    """
    spec, env = ctx.spec, ctx.env
    sheet = read_sheet(spec, env)
    report = check(spec, sheet)
    current: dict[str, str] = {}
    if env.appdb.has_table(schema.labels.name):
        with env.appdb.connect() as conn:
            current = sync.current_labels(conn, spec.name)
    desired = {str(k): v for k, v in report.labels.items()}
    d = sync.diff(current, desired) if not report.blocked else sync.LabelDiff()
    guard = delete_guard(spec, len(current), len(d.deletes))
    too_few = not report.blocked and report.accepted < spec.labels.min_rows
    blocked_by = (
        report.message
        if report.blocked
        else guard.line()
        if not guard.ok
        else f"accepted_labels {report.accepted:,} < min_rows {spec.labels.min_rows:,}"
        if too_few
        else ""
    )
    integer = spec.entity.type == "integer"
    return {
        "check": report.to_contract(),
        "origin": sheet.origin,
        "current": len(current),
        **d.summary(),
        "blocked": bool(blocked_by),
        "blocked_by": blocked_by,
        "inserts": [{"key": k, "new": d.inserts[k]} for k in _ordered(list(d.inserts), integer)[:limit]],
        "updates": [
            {"key": k, "old": d.updates[k][0], "new": d.updates[k][1]}
            for k in _ordered(list(d.updates), integer)[:limit]
        ],
        "deletes": [{"key": k, "old": d.deletes[k]} for k in _ordered(list(d.deletes), integer)[:limit]],
    }


def snapshot_of(ctx: RunContext, sync_id: str) -> dict[str, Any]:
    """The label snapshot a given sync wrote (the one a label-change asset event names)."""
    t = schema.label_syncs
    with ctx.env.appdb.connect() as conn:
        row = conn.execute(
            select(t.c.sync_id, t.c.snapshot_uri, t.c.accepted).where(t.c.model == ctx.model, t.c.sync_id == sync_id)
        ).first()
    if row is None or row.snapshot_uri is None:
        raise LookupError(
            f"{ctx.model}: label sync {sync_id!r} (named by the asset event that started this run) has no "
            "snapshot; was its apply_labels rolled back?"
        )
    return {"sync_id": row.sync_id, "uri": row.snapshot_uri, "rows": row.accepted}


def latest_snapshot(ctx: RunContext) -> dict[str, Any]:
    """The newest label snapshot of the model: what training reads."""
    t = schema.label_syncs
    with ctx.env.appdb.connect() as conn:
        row = conn.execute(
            select(t.c.sync_id, t.c.snapshot_uri, t.c.accepted, t.c.finished_at)
            .where(t.c.model == ctx.model, t.c.snapshot_uri.is_not(None))
            .order_by(t.c.finished_at.desc(), t.c.sync_id.desc())
            .limit(1)
        ).first()
    if row is None:
        raise RuntimeError(f"{ctx.model}: no label snapshot yet; run the {ctx.model}__labels DAG first")
    return {"sync_id": row.sync_id, "uri": row.snapshot_uri, "rows": row.accepted}
