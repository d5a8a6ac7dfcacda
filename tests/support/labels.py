"""The label sync's fixtures and readers on the app DB servers (``appdb_url``) behind the Sheets
API double; the stage functions are the ones the DAG tasks run. Their fixtures (``api``,
``env``) are in tests/integration/labels/conftest.py; ``sheets_api_double`` is also the unit
Sheets tests' ``api``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlbatch.backends.appdb import schema
from mlbatch.backends.env import Environment
from mlbatch.labels import sheets
from mlbatch.spec import ModelSpec, load_spec
from mlbatch.stages.context import RunContext
from mlbatch.stages.labels import apply_labels, check_sheet, labels_gate
from sqlalchemy import select

from tests.fakes.sheets_api import FakeSheetsApi
from tests.support.paths import REPO

KEY = "1LabelSheetKeyForTests_abcdefghij"


@contextmanager
def sheets_api_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSheetsApi]:
    """The Sheets API double, with gspread pointed at it and no service-account key set."""
    with FakeSheetsApi() as fake:
        monkeypatch.setenv(sheets.ENV_ENDPOINT, fake.endpoint)
        monkeypatch.delenv(sheets.ENV_KEY_JSON, raising=False)
        yield fake


def make_spec(tmp_path: Path, name: str = "device_gender", **labels: Any) -> ModelSpec:
    raw = yaml.safe_load((REPO / "dags/specs/device_gender.yaml").read_text())
    raw["name"] = name
    raw["labels"].update({"source": {"sheet": KEY, "worksheet": "labels"}, "min_rows": 1, **labels})
    if "key_type" in labels:
        raw["entity"]["type"] = raw["labels"].pop("key_type")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_spec(path)


def sync(env: Environment, spec: ModelSpec, run: str) -> dict[str, Any]:
    """The labels DAG's three tasks, in order, as one run."""
    ctx = RunContext(env=env, spec=spec, ds="2026-11-22", run_id=run)
    checked = check_sheet(ctx)
    labels_gate(ctx)
    return {"check": checked, **apply_labels(ctx)}


def table(env: Environment, model: str = "device_gender") -> dict[str, str]:
    t = schema.labels
    with env.appdb.connect() as conn:
        return dict(conn.execute(select(t.c.entity_key, t.c.label).where(t.c.model == model)).all())


def history(env: Environment) -> list[tuple]:
    h = schema.label_history
    with env.appdb.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(select(h.c.entity_key, h.c.old_label, h.c.new_label, h.c.sync_id).order_by(h.c.id))
        ]


def sync_log(env: Environment, sync_id: str | None = None) -> list[Any]:
    t = schema.label_syncs
    query = select(t).order_by(t.c.started_at, t.c.sync_id)
    with env.appdb.connect() as conn:
        return conn.execute(query if sync_id is None else query.where(t.c.sync_id == sync_id)).all()
