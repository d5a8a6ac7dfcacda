"""The app DB hook on SQLite (the embedded stack); tests/integration runs the same on MariaDB."""

from datetime import date
from pathlib import Path

from mlbatch.appdb import schema
from mlbatch.appdb.hook import AppDbHook
from mlbatch.statements import aurora_schema_sql
from sqlalchemy import select

REPO = Path(__file__).resolve().parents[2]


def test_sql_aurora_schema_is_rendered_from_the_models():
    assert (REPO / "sql" / "aurora" / "schema.sql").read_text() == aurora_schema_sql(), (
        "sql/aurora/schema.sql is stale: regenerate it with mlbatch.statements.aurora_schema_sql()"
    )


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


def test_guarded_upsert_on_sqlite(tmp_path):
    guarded_upsert_keeps_newer_days(AppDbHook(f"sqlite:///{tmp_path / 'app.db'}"))


def test_password_never_shown(tmp_path):
    assert "s3cret" not in repr(AppDbHook("mysql+pymysql://u:s3cret@db.internal/mlbatch"))
