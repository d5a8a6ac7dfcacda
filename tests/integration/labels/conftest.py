"""Fixtures of the label-sync tests: the Sheets API double and an environment on a fresh MariaDB."""

from __future__ import annotations

import pytest
from mlbatch.env import Environment
from mlbatch.labels import sheets

from tests.fakes.sheets_api import FakeSheetsApi


@pytest.fixture
def api(monkeypatch):
    with FakeSheetsApi() as fake:
        monkeypatch.setenv(sheets.ENV_ENDPOINT, fake.endpoint)
        monkeypatch.delenv(sheets.ENV_KEY_JSON, raising=False)
        yield fake


@pytest.fixture
def env(mariadb_url, tmp_path, monkeypatch) -> Environment:
    monkeypatch.setenv("MLBATCH_APPDB_URL", mariadb_url)
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    e = Environment.from_env()
    yield e
    e.appdb.dispose()
