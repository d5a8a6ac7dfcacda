"""`mlbatch labels sync SPEC [--dry-run]` against the Sheets double and a real MariaDB."""

from __future__ import annotations

import json

import pytest
from mlbatch.cli.app import app
from typer.testing import CliRunner

from tests.support.labels import KEY, history, make_spec, sync_log, table

# The CLI's output and exit codes; its SQL is the label sync's, which test_sync.py runs on both servers.
pytestmark = pytest.mark.appdb("mariadb")


def test_dry_run_prints_the_diff_and_writes_nothing_then_sync_applies_it(env, api, tmp_path):
    rows = [["device_id", "gender", "status"]] + [[str(i), "male"] for i in range(1, 11)]
    ws = api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path, max_invalid_fraction=0.2)
    runner = CliRunner()

    first = runner.invoke(app, ["labels", "sync", str(spec.path)])
    assert first.exit_code == 0, first.output
    assert "inserted 10, updated 0, deleted 0" in first.output
    before_log, before_history = sync_log(env), history(env)

    ws.set(2, 1, "female")  # key 2: male -> female
    ws.cells[10] = []  # key 10 deleted
    ws.cells += [["11", "female"], ["12", "mal"]]  # one insert, one unknown label
    api.requests.clear()
    dry = runner.invoke(app, ["labels", "sync", str(spec.path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would insert 1, update 1, delete 1 (of 10 current labels)" in dry.output
    assert "  + 11: female" in dry.output and "  ~ 2: male -> female" in dry.output
    assert "  - 10: male -> (deleted)" in dry.output and "row 13: unknown_label" in dry.output
    # Nothing written: no label rows, no sync log row, no history, no verdicts in the sheet.
    assert table(env) == {str(i): "male" for i in range(1, 11)}
    assert ws.get(1, 2) != ""  # the real run wrote its verdicts
    assert sync_log(env) == before_log and history(env) == before_history
    assert [r.method for r in api.requests] == ["GET", "GET"] and ws.get(12, 2) == ""

    as_json = runner.invoke(app, ["labels", "sync", str(spec.path), "--dry-run", "--json", "--limit", "1"])
    plan = json.loads(as_json.stdout)
    assert (plan["inserted"], plan["updated"], plan["deleted"], plan["blocked"]) == (1, 1, 1, False)
    assert plan["updates"] == [{"key": "2", "old": "male", "new": "female"}]
    assert plan["check"]["rejected"] == [{"row": 13, "key": "12", "reason": "unknown_label"}]

    applied = runner.invoke(app, ["labels", "sync", str(spec.path)])
    assert applied.exit_code == 0, applied.output
    assert table(env)["2"] == "female" and "10" not in table(env) and table(env)["11"] == "female"
    assert ws.get(12, 2).startswith("unknown_label")


def test_dry_run_and_sync_exit_1_when_the_delete_guard_would_block(env, api, tmp_path):
    rows = [["device_id", "gender"]] + [[str(i), "male"] for i in range(1, 11)]
    ws = api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["labels", "sync", str(spec.path)]).exit_code == 0
    ws.cells = rows[:3]
    dry = runner.invoke(app, ["labels", "sync", str(spec.path), "--dry-run"])
    assert dry.exit_code == 1 and "blocked: FAIL delete_fraction: observed 0.8" in dry.output
    real = runner.invoke(app, ["labels", "sync", str(spec.path)])
    assert real.exit_code == 1 and "would delete 8 of 10 current labels" in real.output
    assert len(table(env)) == 10


def test_run_with_dry_run_checks_and_gates_the_labels_and_writes_nothing(env, api, tmp_path):
    """`mlbatch run --param dry_run=true`: the pipeline's readers and gate run, its writers (and what
    follows them in their DAG) are skipped, as in Airflow."""
    rows = [["device_id", "gender", "status"]] + [[str(i), "male"] for i in range(1, 11)]
    ws = api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path)
    runner = CliRunner()
    args = ["run", str(spec.path), "--ds", "2026-11-22", "--stage", "labels"]

    env.appdb.ensure_schema()  # empty tables, so that "nothing written" can be read back
    dry = runner.invoke(app, [*args, "--run-id", "dry", "--param", "dry_run=true"])
    assert dry.exit_code == 0, dry.output
    lines = [line.split(":")[0] for line in dry.output.splitlines() if line.startswith(("ok ", "skip "))]
    assert lines == [
        "ok device_gender 2026-11-22 check_sheet",
        "ok device_gender 2026-11-22 labels_gate",
        "skip device_gender 2026-11-22 apply_labels",
        "skip device_gender 2026-11-22 decide_retrain",  # follows the writer: a dry run changes nothing to decide on
        "skip device_gender 2026-11-22 realized_performance",
    ]
    # Nothing written: no labels, no sync log row, no verdicts in the sheet's status column.
    assert table(env) == {} and sync_log(env) == []
    assert [ws.get(row, 2) for row in range(1, 11)] == [""] * 10

    bad = runner.invoke(app, [*args, "--param", "dry_run=maybe"])
    assert bad.exit_code == 2 and "--param 'dry_run=maybe': dry_run takes true or false" in bad.output

    real = runner.invoke(app, [*args, "--run-id", "real"])
    assert real.exit_code == 0, real.output
    assert "ok device_gender 2026-11-22 apply_labels" in real.output
    assert table(env) == {str(i): "male" for i in range(1, 11)}
    assert ws.get(1, 2) != ""  # the real run wrote its verdicts
