"""Google Sheets label source, through gspread: one read per sync, one batched verdict write.

* Credentials: the service-account key JSON of the spec's Airflow connection (extra
  ``keyfile_dict``, or ``key_path``, as the google provider stores them; also their old
  ``extra__google_cloud_platform__`` names), else ``MLBATCH_SHEETS_SERVICE_ACCOUNT_JSON`` (the CLI
  outside Airflow). They are read when a sync runs, never at import, and never logged.
* Reading: the worksheet's metadata (it must exist; its grid size and id serve the write), then
  ONE ``values:batchGet`` of the whole worksheet with ``FORMATTED_VALUE``: the text the analyst
  sees, so "1,234" in a key cell is reported as the analyst would read it.
* Writing: ONE ``values:batchUpdate`` (``RAW``, so a verdict is never run as a formula) whose ranges
  cover only the write-back column's cells that change. A missing column gets a header cell after
  the last used column (and the grid a column more when it is full: one ``appendDimension``).
* 429 and 5xx answers are retried with gspread's exponential backoff, bounded here.
* ``MLBATCH_SHEETS_ENDPOINT`` (e.g. ``http://127.0.0.1:8123``) sends every call to a Sheets API
  double instead of Google; with no service account configured, calls are then anonymous.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.oauth2.service_account import Credentials
from gspread import Client
from gspread.exceptions import APIError
from gspread.http_client import BackOffHTTPClient, HTTPClient
from gspread.utils import a1_range_to_grid_range, absolute_range_name, rowcol_to_a1

from mlbatch.errors import StageFailed
from mlbatch.labels.grid import SheetData, plan_verdicts
from mlbatch.spec import SheetSource

if TYPE_CHECKING:
    from google.auth.credentials import Credentials as GoogleCredentials
    from google.auth.transport.requests import AuthorizedSession
    from requests import Response

log = logging.getLogger(__name__)

GOOGLE_SHEETS = "https://sheets.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/spreadsheets",)
ENV_KEY_JSON = "MLBATCH_SHEETS_SERVICE_ACCOUNT_JSON"
ENV_ENDPOINT = "MLBATCH_SHEETS_ENDPOINT"
_KEY_FIELDS = ("keyfile_dict", "extra__google_cloud_platform__keyfile_dict")
_PATH_FIELDS = ("key_path", "extra__google_cloud_platform__key_path")
TIMEOUT = (10, 120)  # connect, read (seconds): a 200k-row worksheet is tens of MB of JSON


class SheetsError(StageFailed, RuntimeError):
    """The sheet cannot be read or written; ``str()`` names the spreadsheet and worksheet."""


class BoundedBackOffHTTPClient(BackOffHTTPClient):
    """gspread's backoff (2, 4, 8 ... s on 408/429/5xx), with an end.

    gspread's own retries forever (its wait is capped, so its give-up test never fires) and keeps
    its counter after a failure that was not retried; here the counter starts at 0 for every call
    and the last attempt's error is raised, so Airflow's task retry takes over.
    """

    max_retries = 6  # 2+4+...+64 s: about two minutes of waiting

    def request(self, *args: Any, **kwargs: Any) -> Response:
        if self._NR_BACKOFF >= self.max_retries:
            return HTTPClient.request(self, *args, **kwargs)
        outermost = self._NR_BACKOFF == 0
        try:
            return super().request(*args, **kwargs)
        finally:
            if outermost:
                self._NR_BACKOFF = 0


def _session(credentials: GoogleCredentials, endpoint: str | None) -> AuthorizedSession:

    class _Session(AuthorizedSession):
        # gspread builds absolute Google URLs; the double takes the same paths on another host.
        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Response:
            if endpoint and isinstance(url, str) and url.startswith(GOOGLE_SHEETS):
                url = endpoint.rstrip("/") + url[len(GOOGLE_SHEETS) :]
            # google-auth annotates neither AuthorizedSession.request nor __init__, nor the credentials' constructors.
            response: Response = super().request(method, url, *args, **kwargs)  # type: ignore[no-untyped-call]
            return response

    return _Session(credentials)  # type: ignore[no-untyped-call]


def _parse_key(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        info = json.loads(raw)
    except (TypeError, ValueError):
        # The text itself is a secret: the message names where it came from, never what it holds.
        raise SheetsError(f"{where} is not valid JSON (a service-account key file's content is expected)") from None
    if not isinstance(info, dict):
        raise SheetsError(f"{where} is JSON but not an object (a service-account key file's content is expected)")
    return info


def service_account_info(conn_id: str) -> dict[str, Any] | None:
    """The key JSON from the Airflow connection, else from the environment; None if neither."""
    # Airflow's connection API (about 2 s to import): a sync that runs, not the CLI's start-up.
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        extra = conn.extra_dejson
        for name in _KEY_FIELDS:
            if extra.get(name):
                return _parse_key(extra[name], f"Airflow connection {conn_id!r} extra {name!r}")
        for name in _PATH_FIELDS:
            if extra.get(name):
                path = Path(extra[name])
                try:
                    text = path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise SheetsError(
                        f"Airflow connection {conn_id!r} extra {name!r}: cannot read {path}: {exc}"
                    ) from None
                return _parse_key(text, f"key file {path} (Airflow connection {conn_id!r})")
    raw = os.environ.get(ENV_KEY_JSON)
    if raw:
        return _parse_key(raw, f"${ENV_KEY_JSON}")
    return None


def open_client(conn_id: str) -> Client:
    endpoint = os.environ.get(ENV_ENDPOINT) or None
    info = service_account_info(conn_id)
    if info is not None:
        try:
            credentials: GoogleCredentials = Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES)
            )
        except ValueError as exc:  # google-auth names missing fields, never their values
            raise SheetsError(f"service account for connection {conn_id!r}: {exc}") from None
    elif endpoint:
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    else:
        raise SheetsError(
            f"no Google service account: add its key JSON to the Airflow connection {conn_id!r} "
            f"(extra 'keyfile_dict') or set ${ENV_KEY_JSON}"
        )
    # With a session, gspread's HTTP client never reads ``auth``: the session carries the credentials.
    client = Client(auth=credentials, session=_session(credentials, endpoint), http_client=BoundedBackOffHTTPClient)
    client.set_timeout(TIMEOUT)
    return client


def _where(source: SheetSource) -> str:
    return f"spreadsheet {source.sheet} worksheet {source.worksheet!r}"


def read_worksheet(source: SheetSource, client: Client | None = None) -> SheetData:
    """The whole worksheet as the analyst sees it: header (row 1) and data rows as text."""
    client = client or open_client(source.conn_id)
    http = client.http_client
    try:
        meta = http.fetch_sheet_metadata(source.sheet)
        props = next(
            (s["properties"] for s in meta.get("sheets", []) if s["properties"]["title"] == source.worksheet), None
        )
        if props is None:
            titles = ", ".join(repr(s["properties"]["title"]) for s in meta.get("sheets", []))
            raise SheetsError(f"{_where(source)}: no such worksheet (the spreadsheet has {titles or 'none'})")
        log.info("reading %s", _where(source))
        answer = http.values_batch_get(
            source.sheet,
            [absolute_range_name(source.worksheet)],
            params={"valueRenderOption": "FORMATTED_VALUE", "majorDimension": "ROWS"},
        )
    except APIError as exc:
        raise SheetsError(f"{_where(source)}: the Sheets API answered {exc}") from None
    value_range = answer["valueRanges"][0]
    table = [[str(c) for c in row] for row in value_range.get("values", [])]
    # The API trims leading empty rows/columns only for ranges that start later; realign to A1
    # so row numbers are sheet row numbers.
    start = a1_range_to_grid_range(value_range.get("range", "A1").rpartition("!")[2])
    top, left = start.get("startRowIndex", 0), start.get("startColumnIndex", 0)
    if left:
        table = [[""] * left + row for row in table]
    table = [[] for _ in range(top)] + table
    grid = props.get("gridProperties", {})
    gid = props.get("sheetId", 0)
    origin = f"https://docs.google.com/spreadsheets/d/{source.sheet}/edit#gid={gid} ({source.worksheet!r})"
    return SheetData(
        header=table[0] if table else [],
        rows=table[1:],
        origin=origin,
        sheet_id=gid,
        grid_columns=grid.get("columnCount", 26),
        client=client,
    )


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row numbers -> (first, last) of each contiguous run."""
    runs: list[tuple[int, int]] = []
    for n in rows:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def write_verdicts(source: SheetSource, sheet: SheetData, column: str, verdicts: dict[int, str]) -> int:
    """Write the changed verdict cells in one batched update; return how many cells changed."""
    plan = plan_verdicts(sheet, column, verdicts)
    if plan.empty:
        return 0
    client = sheet.client or open_client(source.conn_id)
    http = client.http_client
    col = plan.column + 1  # gspread's A1 helpers count from 1
    data = []
    if plan.new_header:
        data.append({"range": absolute_range_name(source.worksheet, rowcol_to_a1(1, col)), "values": [[column]]})
    for first, last in _runs(sorted(plan.cells)):
        a1 = f"{rowcol_to_a1(first, col)}:{rowcol_to_a1(last, col)}"
        values = [[plan.cells[n]] for n in range(first, last + 1)]
        data.append({"range": absolute_range_name(source.worksheet, a1), "majorDimension": "ROWS", "values": values})
    try:
        if col > sheet.grid_columns:
            # A full grid rejects writes beyond it ("exceeds grid limits"): add the column first.
            http.batch_update(
                source.sheet,
                {
                    "requests": [
                        {
                            "appendDimension": {
                                "sheetId": sheet.sheet_id,
                                "dimension": "COLUMNS",
                                "length": col - sheet.grid_columns,
                            }
                        }
                    ]
                },
            )
        http.values_batch_update(source.sheet, {"valueInputOption": "RAW", "data": data})
    except APIError as exc:
        raise SheetsError(f"{_where(source)}: writing verdicts to column {column!r} failed: {exc}") from None
    log.info("%s: wrote %d verdict cells in column %r (%d ranges)", _where(source), len(plan.cells), column, len(data))
    return len(plan.cells)
