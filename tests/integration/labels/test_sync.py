"""Label sync end to end: Sheets API double → check → gate → diff-apply on real servers (MariaDB
for Aurora MySQL, PostgreSQL for Aurora PostgreSQL).

Each test gets a fresh database (``appdb_url``, once per server), its own object store folder and
its own sheet double; the stage functions are the ones the DAG tasks run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
from mlbatch.backends.appdb import schema
from mlbatch.maths.gates import GateFailed
from mlbatch.stages.context import RunContext
from mlbatch.stages.labels import apply_labels, check_sheet, labels_gate
from sqlalchemy import create_engine, inspect, select, text

from tests.fakes.sheets_api import FakeSheetsApi
from tests.support.labels import KEY, history, make_spec, sync, sync_log, table

INJECTION = "x'); DROP TABLE ml_labels; --"


def status_column(api: FakeSheetsApi, col: int) -> list[str]:
    ws = api.worksheet(KEY, "labels")
    return [ws.get(r, col) for r in range(len(ws.cells))]


def test_every_reason_code_through_the_sheet(env, api, tmp_path):
    rows = [
        ["device_id", "note", "gender", "status"],  # reordered, with an extra column
        ["1", "plain", "male"],
        ["2", INJECTION, "Female"],  # injection text in a free-text column does not matter
        ["", "", "", ""],  # blank row: skipped, numbering kept
        ["", "no key", "male"],  # row 5 missing_key
        ["1,234", "formatted number", "male"],  # row 6 invalid_key: the formatted text is checked
        ["7", "", ""],  # row 7 missing_label
        ["8", "", INJECTION],  # row 8 unknown_label: never executed, never stored
        ["#REF!", "", "male"],  # row 9 cell_error in the key
        ["10", "", "#N/A"],  # row 10 cell_error in the label
        ["11", "", "male"],  # rows 11 and 12 conflict
        ["11", "", "female"],
        ["13", "", "female"],  # rows 13 and 14: the same label twice is accepted once
        ["13", "", " FEMALE "],
    ]
    api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path, max_invalid_fraction=0.9)
    result = sync(env, spec, "run-1")

    check = result["check"]
    assert (check["rows"], check["accepted"], check["rejected"]) == (12, 3, 8)
    assert table(env) == {"1": "male", "2": "female", "13": "female"}
    assert inspect(env.appdb.engine).has_table("ml_labels")  # the injection text did nothing
    assert status_column(api, 3) == [
        "status",
        "ok",
        "ok",
        "",
        'missing_key: the "device_id" cell is empty',
        "invalid_key: \"1,234\" is not a whole number (digits only, optionally a leading '-')",
        'missing_label: the "gender" cell is empty',
        f'unknown_label: "{INJECTION}" is not one of "female", "male"',
        'cell_error: the key cell shows "#REF!"',
        'cell_error: the label cell shows "#N/A"',
        'conflict: 11 is also labelled "female" on row 12',
        'conflict: 11 is also labelled "male" on row 11',
        "ok",
        "ok",
    ]
    # One read per sync, one write touching only column D, nothing else.
    assert [r.path.rsplit("/", 1)[-1] for r in api.requests] == [KEY, "values:batchGet", "values:batchUpdate"]
    (write,) = api.calls("batchUpdate")
    assert all(d["range"].startswith("'labels'!D") for d in write.body["data"])
    for r, row in enumerate(rows):
        for c, value in enumerate(row[:3]):
            assert api.worksheet(KEY, "labels").get(r, c) == value
    (log,) = sync_log(env)
    assert (log.verdict, log.rows_read, log.accepted, log.rejected, log.inserted) == ("applied", 12, 3, 8, 3)


def test_unicode_keys_and_labels_are_normalized_and_stored_as_utf8mb4(env, api, tmp_path):
    rows = [
        ["Key", "Label"],
        ["ключ-😀", "Ｍａｌｅ"],  # Cyrillic + emoji key (4-byte UTF-8); full-width label
        ["\u00a0東京\u200b", "fe\u200bmale"],  # NBSP padding and zero-width space: removed
        ["ﬁsh", "male"],  # NFKC folds the ligature: key "fish"
        ["tab\tkey", "male"],  # a control character inside a string key: invalid_key
    ]
    api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path, key_type="string", columns={"key": "key", "label": "label"}, max_invalid_fraction=0.5)
    sync(env, spec, "run-1")
    assert table(env) == {"ключ-😀": "male", "東京": "female", "fish": "male"}
    assert api.worksheet(KEY, "labels").get(4, 2).startswith('invalid_key: "tab\\u0009key" contains control')
    with create_engine(env.appdb_url).connect() as conn:  # a fresh connection reads the same bytes
        assert (
            conn.execute(text("SELECT label FROM ml_labels WHERE entity_key = :k"), {"k": "ключ-😀"}).scalar() == "male"
        )


def test_too_many_invalid_rows_block_but_still_write_verdicts(env, api, tmp_path):
    api.add_worksheet(KEY, "labels", [["device_id", "gender", "status"], ["1", "male"], ["2", "mal"], ["3", "?"]])
    spec = make_spec(tmp_path, max_invalid_fraction=0.5)
    ctx = RunContext(env=env, spec=spec, ds="2026-11-22", run_id="run-1")
    checked = check_sheet(ctx)
    assert (
        checked["blocked"] and "2 of 3 rows rejected (66.7%) exceeds max_invalid_fraction 50.0%" in checked["message"]
    )
    assert status_column(api, 2) == [
        "status",
        "ok",
        'unknown_label: "mal" is not one of "female", "male"',
        'unknown_label: "?" is not one of "female", "male"',
    ]
    with pytest.raises(GateFailed, match=r"invalid_fraction: observed 0.6667, threshold <= 0.5"):
        labels_gate(ctx)
    assert table(env) == {}
    (log,) = sync_log(env)
    assert log.verdict == "blocked" and "invalid_fraction" in log.message and log.finished_at is not None


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["device_id", "sex"], ["1", "male"]], 'blocked: missing column "gender" (found columns: "device_id", "sex")'),
        ([["device_id", "gender", "status"], [], ["", "", "ok"]], "blocked: no data rows"),
        ([], 'blocked: missing columns "device_id", "gender" (found columns: none)'),
    ],
    ids=["missing_column", "header_only", "empty_sheet"],
)
def test_missing_column_and_empty_sheet_block_without_touching_the_sheet(env, api, tmp_path, rows, message):
    ws = api.add_worksheet(KEY, "labels", rows)
    before = [list(r) for r in ws.cells]
    ctx = RunContext(env=env, spec=make_spec(tmp_path), ds="2026-11-22", run_id="run-1")
    assert check_sheet(ctx)["message"] == message
    with pytest.raises(GateFailed, match="sheet_blocked"):
        labels_gate(ctx)
    assert ws.cells == before and api.calls("batchUpdate") == []
    assert table(env) == {} and sync_log(env)[0].verdict == "blocked"


def test_delete_guard_blocks_and_leaves_the_table_unchanged(env, api, tmp_path):
    rows = [["device_id", "gender"]] + [[str(i), "male" if i % 2 else "female"] for i in range(1, 11)]
    ws = api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path)  # max_delete_fraction 0.2 from the example spec
    sync(env, spec, "run-1")
    before = table(env)
    ws.cells = rows[:4]  # a filter left on: 7 of 10 rows gone
    with pytest.raises(
        GateFailed, match=r"delete_fraction: observed 0.7, threshold <= 0.2 \(the sheet would delete 7 of 10"
    ):
        sync(env, spec, "run-2")
    assert table(env) == before
    assert len(history(env)) == 10  # only the first sync's inserts
    verdicts = sorted(r.verdict for r in sync_log(env))
    assert verdicts == ["applied", "blocked"]
    (second,) = [r for r in sync_log(env) if r.verdict == "blocked"]
    assert "would delete 7 of 10 current labels" in second.message


def test_rerun_without_change_writes_nothing_and_a_change_writes_history_and_a_snapshot(env, api, tmp_path):
    rows = [["device_id", "gender", "status"]] + [[str(i), "male"] for i in range(1, 11)]
    ws = api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path)
    first = sync(env, spec, "run-1")
    assert first["changed"] and first["inserted"] == 10

    api.requests.clear()
    again = sync(env, spec, "run-2")
    assert not again["changed"] and (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)
    assert api.calls("batchUpdate") == []  # verdicts unchanged: the sheet is not written either
    assert len(history(env)) == 10
    t = schema.labels
    with env.appdb.connect() as conn:
        assert {r[0] for r in conn.execute(select(t.c.sync_id))} == {first["sync_id"]}
    (log,) = sync_log(env, again["sync_id"])
    assert (log.verdict, log.message, log.snapshot_uri) == ("no_change", "no change", None)

    ws.set(1, 1, "Female")  # update key 1
    ws.cells[10] = ["", "", "ok"]  # key 10 removed (1 of 10 ≤ 20%): its stale verdict is cleared
    ws.cells.append(["11", "female"])  # insert
    third = sync(env, spec, "run-3")
    assert (third["inserted"], third["updated"], third["deleted"]) == (1, 1, 1)
    assert history(env)[10:] == [
        ("11", None, "female", third["sync_id"]),
        ("1", "male", "female", third["sync_id"]),
        ("10", "male", None, third["sync_id"]),
    ]
    assert ws.get(10, 2) == "" and ws.get(11, 2) == "ok"
    snapshot = sync_log(env, third["sync_id"])[0].snapshot_uri
    assert snapshot.endswith(f"labels/device_gender/{third['sync_id']}.parquet")
    snap = pq.read_table(snapshot.removeprefix("file://")).to_pydict()
    assert dict(zip(map(str, snap["entity_key"]), snap["label"], strict=True)) == table(env)


KILLED_APPLY = textwrap.dedent(
    """
    import sys, time
    from mlbatch.backends.env import Environment
    from mlbatch.labels import sync
    from mlbatch.spec import load_spec
    from mlbatch.stages.context import RunContext
    from mlbatch.stages.labels import apply_labels

    real_apply = sync.apply

    def apply_then_hang(*args, **kwargs):
        real_apply(*args, **kwargs)  # every delete, insert, update and history row is sent
        print("IN_TRANSACTION", flush=True)
        time.sleep(600)  # ... and the transaction is still open when the process is killed

    sync.apply = apply_then_hang
    ctx = RunContext(env=Environment.from_env(), spec=load_spec(sys.argv[1]), ds="2026-11-22", run_id="run-2")
    apply_labels(ctx)
    """
)


def test_a_sync_killed_mid_apply_leaves_the_table_as_before(env, api, tmp_path):
    rows = [["device_id", "gender"]] + [[str(i), "male"] for i in range(1, 21)]
    ws = api.add_worksheet(KEY, "labels", rows)
    spec = make_spec(tmp_path)
    sync(env, spec, "run-1")
    before, before_history = table(env), history(env)

    # Keys 19 and 20 go (2 of 20, under the delete guard), key 5 changes, key 21 arrives.
    ws.cells = [rows[0]] + [[str(i), "female" if i == 5 else "male"] for i in range(1, 19)] + [["21", "female"]]
    ctx = RunContext(env=env, spec=spec, ds="2026-11-22", run_id="run-2")
    check_sheet(ctx)
    labels_gate(ctx)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_APPLY, str(spec.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "IN_TRANSACTION", proc.stderr.read()
        assert table(env) == before  # other sessions never see the open transaction
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert table(env) == before and history(env) == before_history
    sid = ctx.load_state("labels_check", "")["sync_id"]
    assert sync_log(env, sid)[0].verdict == "checked"  # the apply never committed

    # The server rolled the dead session back: the same sync applies now (it waits for the locks).
    result = apply_labels(ctx)
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 1, 2)
    assert table(env)["5"] == "female" and "19" not in table(env)
