"""The app DB from an Airflow connection of type ``postgres`` (Aurora PostgreSQL) against a real
PostgreSQL: the backend comes from the connection's type, the password stays out of every log
line, and TLS extras reach psycopg2."""

import json
import logging

import pytest
from mlbatch.backends.env import Environment
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.support.appdb import POSTGRES_PASSWORD, guarded_upsert_keeps_newer_days


def use_connection(monkeypatch, postgres_url: str, **fields) -> Environment:
    url = make_url(postgres_url)
    conn = {"conn_type": "postgres", "host": url.host, "port": url.port, "schema": url.database, "login": url.username}
    monkeypatch.setenv("AIRFLOW_CONN_MLBATCH_APPDB", json.dumps(conn | {"password": POSTGRES_PASSWORD} | fields))
    monkeypatch.setenv("MLBATCH_APPDB_CONN_ID", "mlbatch_appdb")
    monkeypatch.delenv("MLBATCH_APPDB_URL", raising=False)
    monkeypatch.delenv("MLBATCH_APPDB_PASSWORD", raising=False)
    return Environment.from_env()


def test_app_db_works_from_a_postgres_connection_and_never_logs_its_password(monkeypatch, postgres_url, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # echo every statement and its parameters
    env = use_connection(monkeypatch, postgres_url)
    db = env.appdb
    assert db.dialect == "postgresql" and db.url.startswith("postgresql+psycopg2://mlbatch@127.0.0.1:")
    guarded_upsert_keeps_newer_days(db)
    with db.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == "mlbatch"
        assert conn.execute(text("SHOW application_name")).scalar() == "mlbatch"  # named in pg_stat_activity
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert caplog.records, "the statement log was not captured"
    for text_ in (caplog.text, repr(db), db.url, str(db.engine.url), json.dumps(env.describe())):
        assert POSTGRES_PASSWORD not in text_
    db.dispose()


def test_wrong_password_fails_without_echoing_it(monkeypatch, postgres_url):
    db = use_connection(monkeypatch, postgres_url, password="not-" + POSTGRES_PASSWORD).appdb
    with pytest.raises(OperationalError) as err:
        db.connect()
    assert "password authentication failed" in str(err.value) and POSTGRES_PASSWORD not in str(err.value)
    db.dispose()


def test_sslmode_require_reaches_the_driver(monkeypatch, postgres_url):
    """The test server has no TLS: ``sslmode: require`` is refused at connect, never downgraded."""
    db = use_connection(monkeypatch, postgres_url, extra={"sslmode": "require"}).appdb
    with pytest.raises(OperationalError, match="server does not support SSL"):
        db.connect()
    db.dispose()
