"""The model registry in the app DB: versions with status, metrics, artifacts and lineage.

Status moves candidate → production (previous production → retired) or candidate → rejected.
Exactly one version per model is in production; promotion swaps it in one transaction.
By hand (``mlbatch models promote|rollback``): :func:`promote` makes any version that the gate
did not reject production (a rejected one only with ``force``), and :func:`rollback`
re-promotes the most recently retired version; both record who and why in ``reason``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.errors import UsageError

STATUSES = ("candidate", "pending_approval", "production", "rejected", "retired")
t = schema.model_versions


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    family: str
    status: str
    metric: str
    value: float
    artifact_uri: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    reason: str | None
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ModelVersion:
        return cls(
            model=row.model,
            version=row.version,
            family=row.family,
            status=row.status,
            metric=row.metric,
            value=row.value,
            artifact_uri=row.artifact_uri,
            metrics=json.loads(row.metrics_json),
            lineage=json.loads(row.lineage_json),
            reason=row.reason,
            created_at=row.created_at,
            decided_at=row.decided_at,
        )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def register(db: AppDbHook, mv: dict[str, Any]) -> ModelVersion:
    """Add a candidate version; registering the same version again changes nothing."""
    with db.begin() as conn:
        existing = get(conn, mv["model"], mv["version"])
        if existing is None:
            conn.execute(
                t.insert().values(
                    model=mv["model"],
                    version=mv["version"],
                    family=mv["family"],
                    status="candidate",
                    metric=mv["metric"],
                    value=float(mv["value"]),
                    metrics_json=json.dumps(mv["metrics"], sort_keys=True),
                    artifact_uri=mv["artifact_uri"],
                    lineage_json=json.dumps(mv["lineage"], sort_keys=True),
                    created_at=_now(),
                )
            )
        return _written(conn, mv["model"], mv["version"])


def get(conn: Connection, model: str, version: str) -> ModelVersion | None:
    row = conn.execute(select(t).where(t.c.model == model, t.c.version == version)).first()
    return ModelVersion.from_row(row) if row else None


def _written(conn: Connection, model: str, version: str) -> ModelVersion:
    """A version this transaction has just inserted or updated (so it is there)."""
    mv = get(conn, model, version)
    assert mv is not None, f"{model} {version} is not in the registry right after its write"
    return mv


def production(db: AppDbHook, model: str) -> ModelVersion | None:
    if not db.has_table(t.name):
        return None
    with db.connect() as conn:
        row = conn.execute(select(t).where(t.c.model == model, t.c.status == "production")).first()
    return ModelVersion.from_row(row) if row else None


def versions(db: AppDbHook, model: str) -> list[ModelVersion]:
    with db.connect() as conn:
        rows = conn.execute(select(t).where(t.c.model == model).order_by(t.c.created_at, t.c.version))
        return [ModelVersion.from_row(r) for r in rows]


def decide(db: AppDbHook, model: str, version: str, status: str, reason: str) -> None:
    """Set a version's status; promoting retires the previous production version atomically."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    now = _now()
    with db.begin() as conn:
        if get(conn, model, version) is None:
            raise LookupError(f"{model} has no version {version!r}")
        if status == "production":
            _swap_in(conn, model, version, reason, now)
        else:
            conn.execute(
                t.update()
                .where(t.c.model == model, t.c.version == version)
                .values(status=status, reason=reason, decided_at=now)
            )


class RegistryError(UsageError, ValueError):
    """A manual registry change cannot be made; the message says why and what would allow it."""


def _lock_versions(conn: Connection, model: str) -> list[ModelVersion]:
    """The model's versions, locked for this transaction (FOR UPDATE on MySQL/MariaDB; SQLite
    locks the whole database on the first write anyway), so two promotions cannot interleave."""
    query = select(t).where(t.c.model == model).order_by(t.c.created_at, t.c.version)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return [ModelVersion.from_row(r) for r in conn.execute(query)]


def _swap_in(conn: Connection, model: str, version: str, reason: str, now: datetime) -> None:
    conn.execute(
        t.update()
        .where(t.c.model == model, t.c.status == "production", t.c.version != version)
        .values(status="retired", decided_at=now)
    )
    conn.execute(
        t.update()
        .where(t.c.model == model, t.c.version == version)
        .values(status="production", reason=reason, decided_at=now)
    )


def promote(db: AppDbHook, model: str, version: str, reason: str, *, by: str, force: bool = False) -> ModelVersion:
    """Make ``version`` production by hand, in one transaction; the previous one is retired.

    A rejected version needs ``force``: the gate said no, so overriding it must be deliberate.
    The reason stored says who promoted it and why (and that it was manual).
    """
    if not reason.strip():
        raise RegistryError("a manual promotion needs a reason (it is stored with the version)")
    with db.begin() as conn:
        found = {v.version: v for v in _lock_versions(conn, model)}
        target = found.get(version)
        if target is None:
            known = ", ".join(list(found)[-5:]) or "none"
            raise RegistryError(f"{model} has no version {version!r} (latest: {known})")
        if target.status == "production":
            raise RegistryError(f"{model} {version} is already in production")
        if target.status == "rejected" and not force:
            raise RegistryError(
                f"{model} {version} was rejected by the model gate ({target.reason}); pass --force to promote it anyway"
            )
        note = f"manual promotion by {by}: {reason.strip()}"
        if target.status == "rejected":
            note += " (forced over the gate's rejection)"
        _swap_in(conn, model, version, note, _now())
        return _written(conn, model, version)


def rollback(db: AppDbHook, model: str, reason: str, *, by: str) -> tuple[ModelVersion, ModelVersion | None]:
    """Re-promote the most recently retired version; the current production version is retired.

    Returns (now production, previously production). Rolling back twice swaps the two back:
    the version just retired is then the most recently retired one.
    """
    with db.begin() as conn:
        rows = _lock_versions(conn, model)
        retired = [v for v in rows if v.status == "retired"]
        if not retired:
            raise RegistryError(f"{model} has no retired version to roll back to")
        target = max(retired, key=lambda v: (v.decided_at or v.created_at, v.created_at, v.version))
        current = next((v for v in rows if v.status == "production"), None)
        note = f"rollback by {by}" + (f" from {current.version}" if current else "") + f": {reason.strip() or '-'}"
        _swap_in(conn, model, target.version, note, _now())
        return _written(conn, model, target.version), current


def decide_approval(
    db: AppDbHook,
    model: str,
    version: str,
    *,
    approved: bool,
    by: str,
    comment: str = "",
    timed_out: bool = False,
) -> ModelVersion:
    """A person's decision on a version waiting for approval (``pending_approval``), in one
    transaction: approving promotes it (the champion is retired), rejecting keeps the champion.

    Who decided and their comment go into the version's ``reason``; ``decided_at`` is when.
    Raises :class:`RegistryError` when the version is not waiting (already decided, e.g. from the
    CLI while the Airflow task waited): the first decision stands.
    """
    with db.begin() as conn:
        found = {v.version: v for v in _lock_versions(conn, model)}
        target = found.get(version)
        if target is None:
            raise RegistryError(f"{model} has no version {version!r}")
        if target.status != "pending_approval":
            raise RegistryError(
                f"{model} {version} is not waiting for approval: it is {target.status} ({target.reason or 'no reason'})"
            )
        said = f": {comment.strip()}" if comment.strip() else ""
        now = _now()
        if timed_out:
            note = f"no answer within the approval timeout; rejected, the champion stays{said}"
        else:
            note = f"{'approved' if approved else 'rejected'} by {by}{said}"
        if approved and not timed_out:
            _swap_in(conn, model, version, note, now)
        else:
            conn.execute(
                t.update()
                .where(t.c.model == model, t.c.version == version)
                .values(status="rejected", reason=note, decided_at=now)
            )
        return _written(conn, model, version)
