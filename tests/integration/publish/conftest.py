"""Fixtures of the publish tests on real servers: an environment on a fresh database (``appdb_url``:
MariaDB for Aurora MySQL and PostgreSQL for Aurora PostgreSQL, unless a test is marked for one)
and the test model's spec."""

from __future__ import annotations

import pytest
from mlbatch.backends.appdb import locks

from tests.support.publish import make_env, write_spec


@pytest.fixture
def env(tmp_path, appdb_url):
    env = make_env(tmp_path, appdb_url)
    yield env
    env.appdb.dispose()


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path)


@pytest.fixture
def quick_give_up(monkeypatch):
    """1 s waits, 2 tries: the test's blocker outlasts them all."""
    monkeypatch.setattr(locks, "LOCK_WAIT_S", 1)
    monkeypatch.setattr(locks, "ATTEMPTS", 2)
    monkeypatch.setattr(locks, "BACKOFF_S", 0.1)
