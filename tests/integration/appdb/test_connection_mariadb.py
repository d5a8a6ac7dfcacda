"""The app DB from an Airflow connection against a real MariaDB: the password stays out of logs."""

import json
import logging
import uuid

import pytest
from mlbatch.backends.env import Environment
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.support.appdb import guarded_upsert_keeps_newer_days

SECRET = "Pw-4e8b0d13-conn-only"


@pytest.fixture
def conn_user(mariadb, mariadb_url):
    """A user of its own with a password nothing else uses, on the test's fresh database."""
    user, database = f"u_{uuid.uuid4().hex[:8]}", mariadb_url.rsplit("/", 1)[1]
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{SECRET}'"))
        conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'"))
        conn.execute(text(f"GRANT FILE ON *.* TO '{user}'@'127.0.0.1'"))
    yield user, database
    with admin.begin() as conn:
        conn.execute(text(f"DROP USER '{user}'@'127.0.0.1'"))
    admin.dispose()


def use_connection(monkeypatch, mariadb, user, database, **fields) -> Environment:
    conn = {"conn_type": "mysql", "host": "127.0.0.1", "port": mariadb.port, "schema": database}
    monkeypatch.setenv("AIRFLOW_CONN_MLBATCH_APPDB", json.dumps(conn | {"login": user, "password": SECRET} | fields))
    monkeypatch.setenv("MLBATCH_APPDB_CONN_ID", "mlbatch_appdb")
    monkeypatch.delenv("MLBATCH_APPDB_URL", raising=False)
    monkeypatch.delenv("MLBATCH_APPDB_PASSWORD", raising=False)
    return Environment.from_env()


def test_app_db_works_from_the_connection_and_never_logs_its_password(monkeypatch, mariadb, conn_user, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # echo every statement and its parameters
    env = use_connection(monkeypatch, mariadb, *conn_user)
    db = env.appdb
    guarded_upsert_keeps_newer_days(db)
    with db.connect() as conn:
        assert conn.execute(text("SELECT CURRENT_USER()")).scalar().startswith(conn_user[0] + "@")
        assert conn.execute(text("SELECT @@local_infile")).scalar() == 1
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert caplog.records, "the statement log was not captured"
    for text_ in (caplog.text, repr(db), db.url, str(db.engine.url), json.dumps(env.describe())):
        assert SECRET not in text_
    db.dispose()


def test_wrong_password_fails_without_echoing_it(monkeypatch, mariadb, conn_user):
    db = use_connection(monkeypatch, mariadb, *conn_user, password="not-" + SECRET).appdb
    with pytest.raises(OperationalError) as err:
        db.connect()
    assert "Access denied" in str(err.value) and SECRET not in str(err.value)
    db.dispose()


def test_tls_extras_reach_the_driver(monkeypatch, mariadb, conn_user):
    """ssl_mode REQUIRED reaches PyMySQL: on a server without TLS the connect is refused, never downgraded."""
    db = use_connection(monkeypatch, mariadb, *conn_user, extra={"ssl_mode": "REQUIRED"}).appdb
    admin = create_engine(mariadb.url)
    with admin.connect() as conn:
        have_ssl = conn.execute(text("SELECT @@have_ssl")).scalar()
    admin.dispose()
    if have_ssl == "YES":
        with db.connect() as conn:
            cipher = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).fetchone()[1]
        assert cipher, "REQUIRED connected without TLS"
    else:
        with pytest.raises(OperationalError, match="SSL is required"):
            db.connect()
    db.dispose()
