"""Checks of the app DB hook that run alike on SQLite, MariaDB and PostgreSQL, and an environment on a given app DB."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.backends.env import Environment
from sqlalchemy import select

POSTGRES_PASSWORD = "Pw-pg-5d2a9c-app"  # the test server's app user's: distinct, so a test can look for it in logs


def env_from_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, appdb_url: str) -> Environment:
    """Environment.from_env(), as a task builds it, on ``appdb_url`` with home and object store in ``tmp_path``."""
    monkeypatch.setenv("MLBATCH_APPDB_URL", appdb_url)
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    return Environment.from_env()


def guarded_upsert_keeps_newer_days(db: AppDbHook) -> None:
    db.ensure_schema([("m", "integer")])
    table = schema.predictions_table("m", "integer")

    def put(ds: str, rows: dict[int, float]) -> None:
        with db.begin() as conn:
            db.upsert(
                conn,
                table,
                [
                    {"entity_key": k, "ds": date.fromisoformat(ds), "model_version": ds, "label": "x", "score": v}
                    for k, v in rows.items()
                ],
                update=["ds", "model_version", "label", "score"],
                newer_than="ds",
            )

    def read() -> dict[int, tuple[str, float]]:
        with db.connect() as conn:
            return {r.entity_key: (r.ds.isoformat(), r.score) for r in conn.execute(select(table))}

    put("2026-11-22", {1: 0.1, 2: 0.2})
    put("2026-11-22", {1: 0.1, 2: 0.2})  # rerun of the same day: same table
    assert read() == {1: ("2026-11-22", 0.1), 2: ("2026-11-22", 0.2)}
    put("2026-11-23", {1: 0.9})  # a newer day replaces key 1
    put("2026-11-20", {1: 0.5, 2: 0.5, 3: 0.5})  # a backfill: only the new key 3 lands
    assert read() == {1: ("2026-11-23", 0.9), 2: ("2026-11-22", 0.2), 3: ("2026-11-20", 0.5)}
