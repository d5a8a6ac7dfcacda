"""Real servers for integration tests, started by the test set-up itself (installed if missing)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from mlbatch.devservers import MariaDB, start_mariadb, start_moto_s3


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> Iterator[MariaDB]:
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture
def mariadb_url(mariadb: MariaDB) -> Iterator[str]:
    """A fresh, empty database on the shared server for each test."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    yield mariadb.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE `{name}`"))
    admin.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = start_moto_s3()
    yield server.endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> Iterator[dict[str, str]]:
    """AWS_* variables pointing boto3, pyarrow and the jobs at the moto server."""
    from mlbatch.devservers import s3_environment

    env = s3_environment(s3_endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    os.environ.pop("AWS_ENDPOINT_URL", None)
