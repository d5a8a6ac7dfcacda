"""Realized performance, incrementally: each published day's labelled rows are kept, and a sync
adds only what changed since the last measurement.

State (object store, :func:`mlbatch.names.realized_state_key`): the last ``ml_label_history`` id
measured, the day (``ds`` of the labels run) it was measured on, and the (version, run) of every
day measured.
Each measured day's labelled predictions (key, true class, predicted class, score) are kept in
``realized/<model>/days/<ds>.parquet`` (a few per cent of a day at most). Then a run:

* measures a day published since (or republished by another run) once, in full: the day's
  predictions streamed and joined with every current label (:func:`scan_day`);
* for the days already measured, reads only the label changes after the last id and looks up
  the days those entities were scored in ``<model>_history`` by key (:func:`scored`): the cost is
  the new labels', not the days'; each touched day's rows are updated and its metric recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, func, select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.backends.store import iter_parquet
from mlbatch.labels import sync
from mlbatch.spec import ModelSpec
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.labels import snapshot_of
from mlbatch.stages.score import shard_uris

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 1_000  # keys per history lookup (an IN list the app DB plans as index seeks)
ROWS = pa.schema([("entity_key", pa.string()), ("y", pa.int64()), ("pred", pa.int64()), ("score", pa.float64())])


def _classes(spec: ModelSpec) -> dict[str, int]:
    return {c.casefold(): i for i, c in enumerate(spec.labels.classes)}


def scan_day(spec: ModelSpec, sources: list[str], labels: dict[str, str], exclude: set[str]) -> pa.Table:
    """The day's predictions that have a late label, streamed batch by batch (a day can hold tens of
    millions of rows; only the labelled rows, a few per cent at most, are kept)."""
    classes = _classes(spec)
    late = {k: v for k, v in labels.items() if k not in exclude}
    wanted = pa.array(list(late), pa.string())
    parts: list[pa.Table] = []
    for batch in iter_parquet(sources, ["entity_key", "label", "score"], what="published predictions"):
        keys = pc.cast(batch.column("entity_key"), pa.string())
        mask = pc.is_in(keys, value_set=wanted)
        rows = batch.filter(mask)
        if not rows.num_rows:
            continue
        found = keys.filter(mask).to_pylist()
        parts.append(
            pa.table(
                {
                    "entity_key": pa.array(found, pa.string()),
                    "y": pa.array([classes[late[k].casefold()] for k in found], pa.int64()),
                    "pred": pa.array(
                        [classes[str(v).casefold()] for v in rows.column("label").to_pylist()], pa.int64()
                    ),
                    "score": pc.cast(rows.column("score"), pa.float64()),
                },
                schema=ROWS,
            )
        )
    return pa.concat_tables(parts) if parts else ROWS.empty_table()


def arrays(rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class, predicted class, score) of a day's labelled rows, for the metric."""
    return (
        rows.column("y").to_numpy(zero_copy_only=False).astype(np.int64),
        rows.column("pred").to_numpy(zero_copy_only=False).astype(np.int64),
        rows.column("score").to_numpy(zero_copy_only=False).astype(np.float64),
    )


def read_day(store: Any, model: str, ds: str) -> pa.Table:
    key = names.realized_day_key(model, ds)
    if not store.exists(key):
        return ROWS.empty_table()
    return pq.read_table(pa.BufferReader(store.get_bytes(key))).cast(ROWS)


def write_day(store: Any, model: str, ds: str, rows: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(rows.cast(ROWS), sink)
    store.put_bytes(names.realized_day_key(model, ds), sink.getvalue().to_pybytes())


def last_change_id(conn: Connection, model: str) -> int:
    h = schema.label_history
    return int(conn.execute(select(func.max(h.c.id)).where(h.c.model == model)).scalar_one_or_none() or 0)


def changes_after(conn: Connection, model: str, after: int, upto: int) -> dict[str, str | None]:
    """Each key changed in (after, upto]: its newest label, None when deleted."""
    h = schema.label_history
    rows = conn.execute(
        select(h.c.entity_key, h.c.new_label).where(h.c.model == model, h.c.id > after, h.c.id <= upto).order_by(h.c.id)
    )
    return {k: v for k, v in rows}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def scored(conn: Connection, spec: ModelSpec, keys: list[str], days: list[date]) -> list[Any]:
    """(entity_key, ds, label, score) of the published predictions of ``keys`` on ``days``, looked
    up by key in ``<model>_history`` (its primary key starts with the key)."""
    if not keys or not days:
        return []
    t = schema.history_table(spec.name, spec.entity.type)
    typed: list[Any] = [int(k) for k in keys] if spec.entity.type == "integer" else keys
    found: list[Any] = []
    for chunk in _chunks(typed, LOOKUP_CHUNK):
        found += conn.execute(
            select(t.c.entity_key, t.c.ds, t.c.label, t.c.score).where(
                t.c.entity_key.in_(chunk), t.c.ds >= min(days), t.c.ds <= max(days)
            )
        ).all()
    return found


def update_day(
    spec: ModelSpec, rows: pa.Table, changes: dict[str, str | None], found: list[Any], exclude: set[str]
) -> pa.Table:
    """A day's labelled rows with the changed keys replaced: dropped, then added back (with the new
    label) where the key was scored that day and is not in the version's training labels."""
    classes = _classes(spec)
    changed = pa.array(list(changes), pa.string())
    kept = rows.filter(pc.invert(pc.is_in(rows.column("entity_key"), value_set=changed)))
    added = [(str(r.entity_key), r) for r in found if str(r.entity_key) not in exclude]
    added = [(k, r) for k, r in added if changes.get(k) is not None]
    fresh = pa.table(
        {
            "entity_key": pa.array([k for k, _ in added], pa.string()),
            "y": pa.array([classes[str(changes[k]).casefold()] for k, _ in added], pa.int64()),
            "pred": pa.array([classes[str(r.label).casefold()] for _, r in added], pa.int64()),
            "score": pa.array([float(r.score) for _, r in added], pa.float64()),
        },
        schema=ROWS,
    )
    return pa.concat_tables([kept, fresh])


def day_sources(ctx: RunContext, ds: str, run_id: str) -> list[str] | None:
    """The files holding the predictions the publishing run wrote for ``ds``: its shards, else the
    day's export; None when both are gone."""

    day = replace(ctx, ds=ds, run_id=run_id)
    store = ctx.env.store
    uris = shard_uris(day)
    if all(store.exists(store.key(u)) for u in uris):
        return uris
    exported = names.export_key(ctx.model, ds)
    if store.exists(exported):
        return [store.uri(exported)]
    log.warning("%s %s: neither the shards of run %s nor %s exist; day not measured", ctx.model, ds, run_id, exported)
    return None


def trained_keys(ctx: RunContext, version: str, cache: dict[str, set[str]]) -> set[str]:
    """Keys of the label snapshot ``version`` was trained on (empty when it names none)."""
    if version in cache:
        return cache[version]

    keys: set[str] = set()
    with ctx.env.appdb.connect() as conn:
        mv = registry.get(conn, ctx.model, version)
    sync_id = (mv.lineage if mv else {}).get("label_sync_id")
    if sync_id:
        snap = snapshot_of(ctx, sync_id)
        table = pq.read_table(
            pa.BufferReader(ctx.env.store.get_bytes(ctx.env.store.key(snap["uri"]))), columns=["entity_key"]
        )
        keys = {str(k) for k in table["entity_key"].to_pylist()}
    cache[version] = keys
    return keys


def measure_days(ctx: RunContext, days: list[Any], prior: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """The labelled rows of each day that needs measuring (see realized_days), and what was read."""
    spec, db, store = ctx.spec, ctx.env.appdb, ctx.env.store
    done = (prior or {}).get("days", {})
    fresh = [d for d in days if done.get(d.ds.isoformat()) != [d.model_version, d.run_id]]
    known = [d for d in days if d not in fresh]
    with db.connect() as conn:
        upto = last_change_id(conn, spec.name)
        after = int((prior or {}).get("history_id", upto))
        changes = changes_after(conn, spec.name, after, upto) if known and upto > after else {}
        found = scored(conn, spec, list(changes), [d.ds for d in known])
        labels = sync.current_labels(conn, spec.name) if fresh else {}
    trained: dict[str, set[str]] = {}
    out: list[tuple[Any, pa.Table]] = []
    for day in fresh:  # published since the last measurement: the whole day, once
        sources = day_sources(ctx, day.ds.isoformat(), day.run_id)
        if sources is not None:
            exclude = trained_keys(ctx, day.model_version, trained)
            out.append((day, scan_day(spec, sources, labels, exclude)))
    touched = {r.ds for r in found}
    for day in known:  # measured before: only the keys whose labels changed, if it scored them
        hits = [r for r in found if r.ds == day.ds]
        if not changes or (day.ds not in touched and not _held(store, spec.name, day, changes)):
            continue
        rows = read_day(store, spec.name, day.ds.isoformat())
        exclude = trained_keys(ctx, day.model_version, trained)
        out.append((day, update_day(spec, rows, changes, hits, exclude)))
    for day, rows in out:
        write_day(store, spec.name, day.ds.isoformat(), rows)
    read = {
        "label_changes": len(changes),
        "history_rows": len(found),
        "days_scanned": len([d for d, _ in out if d in fresh]),
        "days_updated": len([d for d, _ in out if d not in fresh]),
    }
    state = {
        "history_id": upto,
        "measured_ds": ctx.ds,
        # A day whose files are gone is left out: the next run tries it again.
        "days": {d.ds.isoformat(): [d.model_version, d.run_id] for d in known + [d for d, _ in out if d in fresh]},
    }
    return out, read | {"state": state}


def _held(store: Any, model: str, day: Any, changes: dict[str, str | None]) -> bool:
    """A changed key the day had measured, though the history no longer scores it (deleted labels
    need the day's rows dropped): only read when the lookup found none of them on that day."""
    if not any(v is None for v in changes.values()):
        return False
    rows = read_day(store, model, day.ds.isoformat())
    return bool(pc.any(pc.is_in(rows.column("entity_key"), value_set=pa.array(list(changes), pa.string()))).as_py())


def skip_reason(ctx: RunContext, days: list[Any], prior: dict[str, Any] | None) -> str:
    """Why this run measures nothing (empty: it measures). Label changes are measured at most once
    a run day; a day published (or republished, e.g. by a new version) since the last measurement
    is measured whenever it appears: what users read changed."""
    if prior is None:
        return ""
    done = prior.get("days", {})
    new_days = [d for d in days if done.get(d.ds.isoformat()) != [d.model_version, d.run_id]]
    if new_days:
        return ""
    if prior.get("measured_ds") == ctx.ds:
        return f"measured for {ctx.ds} already (at most once a day); later labels are measured on the next day"
    with ctx.env.appdb.connect() as conn:
        upto = last_change_id(conn, ctx.model)
    if upto == prior.get("history_id"):
        return "no label changed and no day was published since the last measurement"
    return ""
