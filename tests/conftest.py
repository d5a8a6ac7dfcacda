"""Shared test set-up: the repo's paths and an isolated embedded stack per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads its settings at import: point it at this repo before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", str(REPO))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture
def repo() -> Path:
    return REPO
