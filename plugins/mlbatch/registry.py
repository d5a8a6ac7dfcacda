"""The model registry in the app DB: versions with status, metrics, artifacts and lineage.

Status moves candidate → production (previous production → retired) or candidate → rejected.
Exactly one version per model is in production; promotion swaps it in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from mlbatch.appdb import schema
from mlbatch.appdb.hook import AppDbHook

STATUSES = ("candidate", "production", "rejected", "retired")
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
        return get(conn, mv["model"], mv["version"])  # type: ignore[return-value]


def get(conn: Connection, model: str, version: str) -> ModelVersion | None:
    row = conn.execute(select(t).where(t.c.model == model, t.c.version == version)).first()
    return ModelVersion.from_row(row) if row else None


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
            conn.execute(
                t.update()
                .where(t.c.model == model, t.c.status == "production", t.c.version != version)
                .values(status="retired", decided_at=now)
            )
        conn.execute(
            t.update()
            .where(t.c.model == model, t.c.version == version)
            .values(status=status, reason=reason, decided_at=now)
        )
