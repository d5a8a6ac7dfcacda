"""A model spec written from the example spec with one change."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.paths import REPO

EXAMPLE = REPO / "dags" / "specs" / "device_gender.yaml"


def write_spec(tmp_path: Path, mutate, name: str = "device_gender") -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    mutate(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
