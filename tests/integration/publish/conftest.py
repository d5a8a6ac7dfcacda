"""Fixtures of the publish tests on a real MariaDB: an environment on a fresh database and the
test model's spec."""

from __future__ import annotations

import pytest
from mlbatch.appdb import locks

from tests.support.publish import make_env, write_spec


@pytest.fixture
def env(tmp_path, mariadb_url):
    env = make_env(tmp_path, mariadb_url)
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
