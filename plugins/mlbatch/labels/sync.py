"""Apply a checked label sheet to the app DB: only the difference, in one transaction.

Rows are compared with what the table holds; inserts, updates and deletes are written together
with a history row per changed key and the sync's log row, or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update

from mlbatch.backends.appdb import schema


@dataclass
class LabelDiff:
    inserts: dict[str, str] = field(default_factory=dict)
    updates: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (old, new)
    deletes: dict[str, str] = field(default_factory=dict)  # key -> old

    @property
    def changed(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes)

    def summary(self) -> dict[str, int]:
        return {"inserted": len(self.inserts), "updated": len(self.updates), "deleted": len(self.deletes)}


def labels_hash(labels: dict[str, str]) -> str:
    """Content hash of a label set: the same labels give the same hash, whatever the row order."""
    return hashlib.sha256(json.dumps(sorted(labels.items()), ensure_ascii=False).encode()).hexdigest()


def current_labels(conn: Connection, model: str) -> dict[str, str]:
    t = schema.labels
    rows = conn.execute(select(t.c.entity_key, t.c.label).where(t.c.model == model))
    return {k: v for k, v in rows}


def diff(current: dict[str, str], desired: dict[str, str]) -> LabelDiff:
    d = LabelDiff()
    for key, label in desired.items():
        old = current.get(key)
        if old is None:
            d.inserts[key] = label
        elif old != label:
            d.updates[key] = (old, label)
    d.deletes = {k: v for k, v in current.items() if k not in desired}
    return d


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def apply(conn: Connection, model: str, d: LabelDiff, sync_id: str, now: datetime, chunk: int = 5000) -> None:
    """Write the diff and its history inside the caller's transaction.

    Statements go in chunks of ``chunk`` rows: parameter lists stay small (a first sync of a
    200k-row sheet would otherwise build every row's parameters at once), and all of it still
    commits or rolls back together with the caller's transaction.
    """
    t, h = schema.labels, schema.label_history
    deletes = list(d.deletes)
    for i in range(0, len(deletes), chunk):
        conn.execute(delete(t).where(t.c.model == model, t.c.entity_key.in_(deletes[i : i + chunk])))
    inserts = (
        {"model": model, "entity_key": k, "label": v, "sync_id": sync_id, "updated_at": now}
        for k, v in d.inserts.items()
    )
    for batch in _chunks(inserts, chunk):
        conn.execute(t.insert(), batch)
    stmt = (
        update(t)
        .where(t.c.model == model, t.c.entity_key == bindparam("k"))
        .values(label=bindparam("new"), sync_id=sync_id, updated_at=now)
    )
    for batch in _chunks(({"k": k, "new": new} for k, (_old, new) in d.updates.items()), chunk):
        conn.execute(stmt, batch)
    history: Iterator[dict[str, Any]] = chain(  # parameter rows of the history insert
        ({"entity_key": k, "old_label": None, "new_label": v} for k, v in d.inserts.items()),
        ({"entity_key": k, "old_label": o, "new_label": n} for k, (o, n) in d.updates.items()),
        ({"entity_key": k, "old_label": o, "new_label": None} for k, o in d.deletes.items()),
    )
    extra = {"model": model, "sync_id": sync_id, "changed_at": now}
    for batch in _chunks(({**r, **extra} for r in history), chunk):
        conn.execute(h.insert(), batch)
