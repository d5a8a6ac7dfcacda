"""The synthetic warehouse (devtools.synth) that the feature tests unload and read, and the example
model's training query over it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlbatch.backends.warehouse.sql import render_spec_query
from mlbatch.spec import load_spec

from devtools.synth import build_warehouse
from tests.support.paths import REPO


def synth_warehouse(tmp_path_factory: pytest.TempPathFactory, n_devices: int) -> Path:
    """A synthetic DuckDB warehouse of ``n_devices`` devices in a fresh folder."""
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    build_warehouse(path, n_devices=n_devices)
    return path


def device_gender_training_query(ds: str) -> str:
    """device_gender's training query for the day, in Redshift's dialect."""
    return render_spec_query(load_spec(REPO / "dags/specs/device_gender.yaml"), "training", ds)
