"""The app DB hook on SQLite (the embedded stack); tests/integration runs the same on MariaDB."""

from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.reporting.statements import aurora_schema_sql

from tests.support.appdb import guarded_upsert_keeps_newer_days
from tests.support.paths import REPO


def test_sql_aurora_schema_is_rendered_from_the_models():
    assert (REPO / "sql" / "aurora" / "schema.sql").read_text() == aurora_schema_sql(), (
        "sql/aurora/schema.sql is stale: regenerate it with mlbatch.reporting.statements.aurora_schema_sql()"
    )


def test_guarded_upsert_on_sqlite(tmp_path):
    guarded_upsert_keeps_newer_days(AppDbHook(f"sqlite:///{tmp_path / 'app.db'}"))


def test_password_never_shown(tmp_path):
    assert "s3cret" not in repr(AppDbHook("mysql+pymysql://u:s3cret@db.internal/mlbatch"))
