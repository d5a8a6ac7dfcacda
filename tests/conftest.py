"""Shared test set-up: the repo's paths and an isolated embedded stack per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.paths import REPO

# Airflow reads its settings at import: point it at this repo before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", str(REPO))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture
def repo() -> Path:
    return REPO


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m "not integration"` runs without servers."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
