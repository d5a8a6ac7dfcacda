"""The label sheet probe writes the verdict column without changing it: a read-only share and a
protected column FAIL with the fix named; a writable sheet is unchanged afterwards."""

from __future__ import annotations

import pytest
from mlbatch.cli import doctor
from mlbatch.labels import sheets
from mlbatch.spec import load_spec

from tests.fakes.sheets_api import FakeSheetsApi
from tests.support.specs import write_spec

KEY = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
ROWS = [["device_id", "gender", "verdict"], ["1", "m", "ok"], ["2", "f", ""]]


@pytest.fixture
def api(monkeypatch):
    monkeypatch.delenv(sheets.ENV_KEY_JSON, raising=False)
    with FakeSheetsApi() as fake:
        monkeypatch.setenv(sheets.ENV_ENDPOINT, fake.endpoint)
        yield fake


def spec_for(tmp_path, write_back: str | None = "verdict"):
    source = {"sheet": KEY, "worksheet": "labels", "conn_id": "google_doctor"}
    return load_spec(write_spec(tmp_path, lambda r: r["labels"].update(source=source, write_back=write_back)))


def test_writable_sheet_passes_and_is_left_unchanged(api, tmp_path):
    ws = api.add_worksheet(KEY, "labels", ROWS)
    (check,) = doctor.check_sheets([spec_for(tmp_path)])
    assert check.status == "ok", check
    assert "may write verdict column 'verdict'" in check.detail
    assert ws.cells == ROWS
    (write,) = api.calls("batchUpdate")
    assert write.body == {"valueInputOption": "RAW", "data": [{"range": "'labels'!C1", "values": [["verdict"]]}]}


def test_read_only_share_fails_naming_editor(api, tmp_path):
    api.add_worksheet(KEY, "labels", ROWS)
    api.share(KEY, "reader")
    (check,) = doctor.check_sheets([spec_for(tmp_path)])
    assert check.status == "FAIL", check
    assert "PERMISSION_DENIED" in check.detail or "403" in check.detail
    assert check.fix.startswith("share the sheet with the service account's client_email as Editor"), check.fix


def test_read_only_share_is_enough_without_write_back(api, tmp_path):
    api.add_worksheet(KEY, "labels", ROWS)
    api.share(KEY, "reader")
    (check,) = doctor.check_sheets([spec_for(tmp_path, write_back=None)])
    assert check.status == "ok" and "read access is enough" in check.detail
    assert api.calls("batchUpdate") == []


def test_protected_verdict_column_fails_naming_the_protection(api, tmp_path):
    api.add_worksheet(KEY, "labels", ROWS)
    api.protect(KEY, "labels", 2)
    (check,) = doctor.check_sheets([spec_for(tmp_path)])
    assert check.status == "FAIL" and "protected" in check.detail
    assert check.fix.startswith("remove the protection of column 'verdict'")


def test_missing_verdict_column_probes_the_empty_cell_its_header_goes_to(api, tmp_path):
    ws = api.add_worksheet(KEY, "labels", [r[:2] for r in ROWS])
    (check,) = doctor.check_sheets([spec_for(tmp_path)])
    assert check.status == "ok", check
    assert api.calls("batchUpdate")[0].body["data"] == [{"range": "'labels'!C1", "values": [[""]]}]
    assert ws.trimmed(0, 0, 3, 26) == [r[:2] for r in ROWS]
    api.share(KEY, "reader")
    (check,) = doctor.check_sheets([spec_for(tmp_path)])
    assert check.status == "FAIL" and "as Editor" in check.fix
