"""The app DB's backend decides the publisher (mlbatch.backends.appdb.backends), asked by env.py with the other backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlbatch.backends.appdb.mysql_publish import MySqlPublisher
from mlbatch.backends.appdb.postgres_publish import PostgresPublisher
from mlbatch.backends.appdb.sqlite_publish import SqlitePublisher
from mlbatch.backends.env import Environment


def env_for(home: Path, appdb_url: str, *, object_store: str | None = None, from_s3: bool = False) -> Environment:
    return Environment(
        home=home,
        appdb_url=appdb_url,
        object_store=object_store or (home / "objects").as_uri(),
        warehouse_url=f"duckdb://{home / 'warehouse.duckdb'}",
        launcher_kind="local",
        specs_dir=home,
        appdb_load_from_s3=from_s3,
    )


def test_sqlite_app_db_publishes_with_the_sqlite_publisher(tmp_path):
    assert isinstance(env_for(tmp_path, f"sqlite:///{tmp_path / 'app.db'}").publisher, SqlitePublisher)


def test_mysql_app_db_publishes_with_the_mysql_publisher_streaming_from_the_worker(tmp_path):
    publisher = env_for(tmp_path, "mysql+pymysql://mlbatch@db.internal/app").publisher
    assert isinstance(publisher, MySqlPublisher) and publisher.load_from is None


def test_load_from_s3_stages_in_the_object_store_and_refuses_a_local_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBATCH_AURORA_LOAD_FROM_S3", "1")
    monkeypatch.setenv("MLBATCH_APPDB_URL", "mysql+pymysql://mlbatch@db.internal/app")
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path))
    monkeypatch.delenv("MLBATCH_APPDB_CONN_ID", raising=False)
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", "s3://acme-ml/mlbatch")
    publisher = Environment.from_env().publisher
    assert isinstance(publisher, MySqlPublisher) and publisher.load_from.uri("k") == "s3://acme-ml/mlbatch/k"
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    with pytest.raises(ValueError, match=r"LOAD DATA FROM S3 needs an s3:// object store"):
        _ = Environment.from_env().publisher


def test_postgresql_app_db_publishes_with_the_postgres_publisher(tmp_path):
    for url in ("postgresql://mlbatch@db.internal/app", "postgresql+psycopg2://mlbatch@db.internal/app"):
        assert isinstance(env_for(tmp_path, url).publisher, PostgresPublisher)


def test_load_from_s3_is_refused_on_postgresql(tmp_path, monkeypatch):
    """LOAD DATA FROM S3 is Aurora MySQL's: on PostgreSQL the setting is an error, not ignored."""
    env = env_for(tmp_path, "postgresql://mlbatch@db.internal/app", object_store="s3://acme-ml/mlbatch", from_s3=True)
    with pytest.raises(ValueError, match=r"MLBATCH_AURORA_LOAD_FROM_S3=1 is Aurora MySQL's .* unset it"):
        _ = env.publisher


def test_an_unsupported_app_db_is_named_with_the_known_schemes(tmp_path):
    with pytest.raises(
        ValueError, match=r"app DB oracle://u:\*\*\*@h/db: backend 'oracle' is not one of sqlite://"
    ) as e:
        _ = env_for(tmp_path, "oracle://u:secret@h/db").publisher
    assert "mysql:// (Aurora MySQL / MariaDB)" in str(e.value) and "postgresql:// (Aurora PostgreSQL" in str(e.value)
    assert "secret" not in str(e.value)
