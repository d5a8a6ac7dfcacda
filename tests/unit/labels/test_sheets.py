"""gspread against the Sheets API double: one read, one write of the verdict column, backoff, keys."""

from __future__ import annotations

import json
import logging

import pytest
from mlbatch.labels import sheets
from mlbatch.labels.sheets import SheetsError, read_worksheet, write_verdicts
from mlbatch.spec import SheetSource

from tests.fakes.sheets_api import FakeSheetsApi, service_account_key
from tests.support.labels import sheets_api_double

KEY = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
ROWS = [
    ["device_id", "gender", "note", "status"],
    ["1", "male", "first", "stale"],
    ["1,234", "female"],  # a number formatted with a thousands separator: what the analyst sees
    [],
    ["3", "#REF!", "", ""],
    ["", "", "", "old verdict next to a now blank row"],
    ["5", "female", "x'); DROP TABLE ml_labels; --", "ok"],
]


@pytest.fixture
def api(monkeypatch):
    with sheets_api_double(monkeypatch) as fake:
        yield fake


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    """gspread's backoff sleeps 2, 4, 8 ... s: record the waits instead of waiting."""
    waits: list[float] = []

    class _Time:
        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    monkeypatch.setattr("gspread.http_client.time", _Time)
    return waits


def source(worksheet: str = "labels") -> SheetSource:
    return SheetSource(sheet=KEY, worksheet=worksheet, conn_id="mlbatch_test_sheets")


def test_one_read_returns_the_formatted_text_by_sheet_row(api):
    api.add_worksheet(KEY, "labels", ROWS)
    data = read_worksheet(source())
    assert data.header == ROWS[0]
    # Trailing empty cells are trimmed, as Google does; blank rows keep their place.
    assert data.rows == [ROWS[1], ROWS[2], [], ["3", "#REF!"], ROWS[5], ROWS[6]]
    assert data.sheet_id == api.worksheet(KEY, "labels").sheet_id and data.grid_columns == 26
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in api.requests] == [("GET", KEY), ("GET", "values:batchGet")]
    (get,) = api.calls("batchGet")
    assert get.params["ranges"] == ["'labels'"] and get.params["valueRenderOption"] == ["FORMATTED_VALUE"]
    assert get.authorization == ""  # anonymous: no service account configured in endpoint mode


def test_verdicts_touch_only_the_changed_cells_of_the_status_column(api):
    ws = api.add_worksheet(KEY, "labels", ROWS)
    before = [list(r) for r in ws.cells]
    data = read_worksheet(source())
    # rows 2 and 7 change text, row 5 gets its first verdict, row 6 is now blank: its stale
    # verdict goes; row 3's verdict is new. Unchanged cells are not sent.
    verdicts = {2: "ok", 3: 'invalid_key: "1,234" is not a whole number', 5: "cell_error", 7: "ok"}
    assert write_verdicts(source(), data, "status", verdicts) == 4

    (write,) = api.calls("batchUpdate")
    assert write.body["valueInputOption"] == "RAW"
    assert [d["range"] for d in write.body["data"]] == ["'labels'!D2:D3", "'labels'!D5:D6"]
    assert len(api.requests) == 3  # metadata, batchGet, batchUpdate: nothing else
    after = ws.cells
    for r, row in enumerate(before):
        for c, old in enumerate(row):
            if c != 3:
                assert ws.get(r, c) == old, f"cell {r + 1},{c + 1} changed"
    assert [ws.get(r, 3) for r in range(len(after))] == [
        "status",
        "ok",
        'invalid_key: "1,234" is not a whole number',
        "",
        "cell_error",
        "",
        "ok",
    ]
    # Same verdicts again: nothing changes, so nothing is sent.
    api.requests.clear()
    assert write_verdicts(source(), read_worksheet(source()), "status", verdicts) == 0
    assert api.calls("batchUpdate") == []


def test_missing_column_is_appended_after_the_last_used_column_and_the_grid_grows(api):
    rows = [["device_id", "gender"], ["1", "male", "a note without a header"], ["2", "female"]]
    ws = api.add_worksheet(KEY, "labels", rows, column_count=3)
    data = read_worksheet(source())
    assert write_verdicts(source(), data, "Status", {2: "ok", 3: "ok"}) == 2
    (grow,) = api.calls("sheetBatchUpdate")
    assert grow.body == {
        "requests": [{"appendDimension": {"sheetId": ws.sheet_id, "dimension": "COLUMNS", "length": 1}}]
    }
    (write,) = api.calls("batchUpdate")
    assert [d["range"] for d in write.body["data"]] == ["'labels'!D1", "'labels'!D2:D3"]
    assert ws.cells == [
        ["device_id", "gender", "", "Status"],
        ["1", "male", "a note without a header", "ok"],
        ["2", "female", "", "ok"],
    ]


def test_no_verdicts_writes_nothing(api):
    api.add_worksheet(KEY, "labels", [["key", "label", "status"], ["1", "x", "ok"]])
    assert write_verdicts(source(), read_worksheet(source()), "status", {}) == 0
    assert api.calls("batchUpdate") == [] and api.calls("sheetBatchUpdate") == []


def test_429_answers_are_retried_with_backoff(api, no_sleep):
    api.add_worksheet(KEY, "labels", ROWS)
    api.fail_next(3)
    data = read_worksheet(source())
    assert data.header == ROWS[0]
    assert no_sleep == [2, 4, 8]
    assert [r.status for r in api.requests] == [429, 429, 429, 200, 200]
    # The counter starts again for the next call: one more 429 waits 2 s, not 16.
    api.fail_next(1)
    read_worksheet(source())
    assert no_sleep[-1] == 2


def test_backoff_gives_up_and_names_the_sheet(api, no_sleep):
    api.add_worksheet(KEY, "labels", ROWS)
    api.fail_next(100, code=503)
    with pytest.raises(SheetsError, match=rf"spreadsheet {KEY} worksheet 'labels'.*503"):
        read_worksheet(source())
    assert len(api.requests) == sheets.BoundedBackOffHTTPClient.max_retries + 1


def test_missing_worksheet_and_spreadsheet_are_named(api):
    api.add_worksheet(KEY, "Sheet1", ROWS)
    with pytest.raises(SheetsError, match=r"worksheet 'labels': no such worksheet \(the spreadsheet has 'Sheet1'\)"):
        read_worksheet(source())
    with pytest.raises(SheetsError, match=r"spreadsheet 0000000000 .*404"):
        read_worksheet(SheetSource(sheet="0000000000", worksheet="labels"))


def test_worksheet_title_with_quotes_and_spaces(api):
    api.add_worksheet(KEY, "Analyst's labels", [["device_id", "gender"], ["1", "male"]])
    data = read_worksheet(source("Analyst's labels"))
    assert data.rows == [["1", "male"]]
    write_verdicts(source("Analyst's labels"), data, "status", {2: "ok"})
    assert api.calls("batchUpdate")[0].body["data"][1]["range"] == "'Analyst''s labels'!C2:C2"


def test_service_account_from_the_airflow_connection_is_used_and_never_logged(api, monkeypatch, caplog):
    info = service_account_key(api.endpoint + "/token")
    conn = {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": json.dumps(info)}}
    monkeypatch.setenv("AIRFLOW_CONN_MLBATCH_TEST_SHEETS", json.dumps(conn))
    api.add_worksheet(KEY, "labels", ROWS)
    with caplog.at_level(logging.DEBUG):
        read_worksheet(source())
    assert api.calls("token"), "the JWT grant went to the key's token_uri"
    assert api.calls("batchGet")[0].authorization == f"Bearer {FakeSheetsApi.TOKEN}"
    assert "PRIVATE KEY" not in caplog.text and info["private_key_id"] not in caplog.text


def test_key_from_the_environment_when_the_connection_is_missing(api, monkeypatch):
    info = service_account_key(api.endpoint + "/token")
    monkeypatch.setenv(sheets.ENV_KEY_JSON, json.dumps(info))
    assert sheets.service_account_info("mlbatch_no_such_conn") == info


def test_bad_key_json_is_reported_without_its_content(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLBATCH_BAD",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{secret-ish"}}),
    )
    with pytest.raises(SheetsError) as exc:
        sheets.service_account_info("mlbatch_bad")
    assert "extra 'keyfile_dict' is not valid JSON" in str(exc.value) and "secret-ish" not in str(exc.value)


def test_no_credentials_and_no_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(sheets.ENV_ENDPOINT, raising=False)
    monkeypatch.delenv(sheets.ENV_KEY_JSON, raising=False)
    with pytest.raises(
        SheetsError,
        match=r"connection 'mlbatch_nothing' \(extra 'keyfile_dict'\) or set \$MLBATCH_SHEETS_SERVICE_ACCOUNT_JSON",
    ):
        sheets.open_client("mlbatch_nothing")
