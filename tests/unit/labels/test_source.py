"""The CSV label source's verdict write-back (the demo's stand-in for the sheet)."""

from __future__ import annotations

from pathlib import Path

import yaml
from mlbatch.backends.env import Environment
from mlbatch.labels.grid import SheetData, plan_verdicts
from mlbatch.labels.source import read_sheet, write_verdicts
from mlbatch.spec import load_spec
from mlbatch.stages.labels import check

from tests.support.paths import REPO


def _spec(tmp_path: Path):
    raw = yaml.safe_load((REPO / "dags/specs/device_gender.yaml").read_text())
    raw["labels"]["source"] = {"file": str(tmp_path / "labels.csv")}
    path = tmp_path / "device_gender.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def test_plan_only_changed_cells_and_clear_stale_verdicts():
    sheet = SheetData(["k", "label", "Status"], [["1", "a", "ok"], ["", "", "old"], ["3", "b"]], "x")
    plan = plan_verdicts(sheet, " status ", {2: "ok", 4: "unknown_label"})
    assert (plan.column, plan.new_header, plan.cells) == (2, False, {3: "", 4: "unknown_label"})
    assert plan_verdicts(sheet, "status", {}).empty  # nothing to say about any row: nothing written


def test_csv_write_back_appends_after_the_widest_row_and_skips_unchanged_files(tmp_path):
    env = Environment.from_env()
    spec = _spec(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_bytes(b"\xef\xbb\xbfdevice_id,gender\r\n1,male,note\r\n2,mal\r\n,,\r\n")
    sheet = read_sheet(spec, env)
    report = check(spec, sheet)
    assert write_verdicts(spec, env, sheet, report.verdicts) == 2
    assert csv.read_text(encoding="utf-8").splitlines() == [
        "device_id,gender,,status",
        "1,male,note,ok",
        '2,mal,,"unknown_label: ""mal"" is not one of ""female"", ""male"""',
        ",,",
    ]
    again = read_sheet(spec, env)
    before = csv.stat().st_mtime_ns
    assert write_verdicts(spec, env, again, check(spec, again).verdicts) == 0
    assert csv.stat().st_mtime_ns == before
