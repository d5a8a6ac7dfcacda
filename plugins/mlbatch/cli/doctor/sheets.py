"""``mlbatch doctor``'s label sheet probe: the spreadsheet opens, the worksheet exists and, when the
spec writes verdicts back, the service account may WRITE the verdict column.

The write is proved by writing, without changing anything: ONE ``values:batchUpdate`` (the
call, and the ``RAW`` input, of the sync's own verdict write) of the verdict column's header
cell with the text it already holds. Google checks edit rights on every write, same value or
not: a sheet shared as Viewer (or Commenter) answers 403 PERMISSION_DENIED, a protected column
answers 400 "protected cell". Reading permissions instead (Drive's ``capabilities.canEdit``)
would need the Drive API enabled and a Drive scope the sync itself never uses, and would miss
protected ranges. When the column does not exist yet, the probe writes an empty string to the
empty cell where the sync will put its header (an empty cell stays empty).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gspread.utils import absolute_range_name, rowcol_to_a1

from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.labels import sheets as sheets_mod
from mlbatch.labels.grid import find_column
from mlbatch.spec import ModelSpec, SheetSource

if TYPE_CHECKING:
    from gspread import Client

# mlbatch.labels.sheets.service_account_info: a service account's key JSON, None if none is set
AccountInfo = Callable[[str], dict[str, Any] | None]


def check_sheets(specs: list[ModelSpec], open_client: Callable[[str], Client] | None = None) -> list[Check]:
    sheets = [(spec, source) for spec in specs if isinstance(source := spec.labels.source, SheetSource)]
    if not sheets:
        return [Check("label sheet", "skip", "no spec reads a Google Sheet (CSV files)")]

    opener = open_client or sheets_mod.open_client
    return [_sheet_check(spec, source, opener, sheets_mod.service_account_info) for spec, source in sheets]


def _account(source: SheetSource, account_info: AccountInfo) -> str:
    try:
        info = account_info(source.conn_id) or {}
    except Exception:  # noqa: BLE001 - reported by open_client with its own message
        info = {}
    email: str = info.get("client_email", "the service account's client_email")  # the key JSON's text
    return email


def _sheet_check(
    spec: ModelSpec, source: SheetSource, opener: Callable[[str], Client], account_info: AccountInfo
) -> Check:
    boundary = f"sheet {spec.name}"
    email = _account(source, account_info)
    role = "Editor" if spec.labels.write_back else "Viewer"
    try:
        client = opener(source.conn_id)
        meta = client.http_client.fetch_sheet_metadata(source.sheet)
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if any(code in text for code in ("403", "404", "PERMISSION_DENIED", "NOT_FOUND")):
            return Check(
                boundary,
                "FAIL",
                f"spreadsheet {source.sheet} does not open with connection {source.conn_id!r}: {describe_error(exc)}",
                f"share the sheet with {email} as {role}",
            )
        return Check(
            boundary, "FAIL", f"spreadsheet {source.sheet}: {describe_error(exc)}", "check the connection's key JSON"
        )
    props = {s["properties"]["title"]: s["properties"] for s in meta.get("sheets", [])}
    if source.worksheet not in props:
        return Check(
            boundary,
            "FAIL",
            f"spreadsheet {source.sheet} has no worksheet {source.worksheet!r} (has {list(props)})",
            "fix labels.source.worksheet in the spec",
        )
    opened = f"spreadsheet {source.sheet} / {source.worksheet!r} opens as {email}"
    if not spec.labels.write_back:
        return Check(boundary, "ok", opened + " (no write_back: read access is enough)")
    grid = props[source.worksheet].get("gridProperties", {}).get("columnCount", 26)
    return _write_probe(client, source, spec, grid, email, opened)


def _probe_cell(header: list[str], column: str, grid_columns: int, key_column: str) -> tuple[int, str] | None:
    """(0-based column, its current text) of the header cell the probe rewrites unchanged."""

    idx = find_column(header, column)
    if idx is not None:
        return idx, header[idx]
    if len(header) < grid_columns:
        return len(header), ""  # the empty cell the sync's new header goes to
    # A full grid: the sync appends a column first; rewrite the key column's header instead
    # (same worksheet, same rights unless a protection covers that column alone).
    key = find_column(header, key_column)
    return (key, header[key]) if key is not None else None


def _write_probe(client: Client, source: SheetSource, spec: ModelSpec, grid: int, email: str, opened: str) -> Check:

    boundary, column = f"sheet {spec.name}", str(spec.labels.write_back)
    http = client.http_client
    fix = f"share the sheet with {email} as Editor (the sync writes verdicts to column {column!r})"
    try:
        first_row = http.values_get(
            source.sheet,
            absolute_range_name(source.worksheet, "1:1"),
            params={"valueRenderOption": "FORMATTED_VALUE", "majorDimension": "ROWS"},
        )
        header = [str(c) for c in (first_row.get("values") or [[]])[0]]
        target = _probe_cell(header, column, grid, spec.labels.columns.key)
        if target is None:
            return Check(boundary, "warn", f"{opened}; no header cell to probe the write with", fix)
        idx, text = target
        a1 = absolute_range_name(source.worksheet, rowcol_to_a1(1, idx + 1))
        http.values_batch_update(source.sheet, {"valueInputOption": "RAW", "data": [{"range": a1, "values": [[text]]}]})
    except Exception as exc:  # noqa: BLE001
        message = str(exc)
        if "PERMISSION_DENIED" in message or "403" in message:
            return Check(boundary, "FAIL", f"{opened}, but cannot write to it: {describe_error(exc)}", fix)
        if "protected" in message.lower():
            return Check(
                boundary,
                "FAIL",
                f"{opened}, but column {column!r} is protected: {describe_error(exc)}",
                f"remove the protection of column {column!r} or add {email} to its editors",
            )
        return Check(boundary, "FAIL", f"{opened}; the write probe failed: {describe_error(exc)}", fix)
    return Check(boundary, "ok", f"{opened}; may write verdict column {column!r} (rewrote {a1} unchanged)")
