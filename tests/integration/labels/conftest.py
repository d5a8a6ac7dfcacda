"""Fixtures of the label-sync tests: the Sheets API double and an environment on a fresh app DB
(``appdb_url``: MariaDB and PostgreSQL)."""

from __future__ import annotations

import pytest
from mlbatch.backends.env import Environment

from tests.support.appdb import env_from_variables
from tests.support.labels import sheets_api_double


@pytest.fixture
def api(monkeypatch):
    with sheets_api_double(monkeypatch) as fake:
        yield fake


@pytest.fixture
def env(appdb_url, tmp_path, monkeypatch) -> Environment:
    e = env_from_variables(monkeypatch, tmp_path, appdb_url)
    yield e
    e.appdb.dispose()
