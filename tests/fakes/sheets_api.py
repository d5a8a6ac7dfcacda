"""A Google Sheets API v4 double on 127.0.0.1, for gspread pointed at it (MLBATCH_SHEETS_ENDPOINT).

It answers the calls gspread 6.2 makes for our label sync, with Google's URL shapes, payloads and
error bodies:

* ``GET  /v4/spreadsheets/{id}``                      metadata (sheets[].properties, gridProperties)
* ``GET  /v4/spreadsheets/{id}/values/{range}``       values.get
* ``GET  /v4/spreadsheets/{id}/values:batchGet``      values.batchGet (``ranges`` repeated)
* ``PUT  /v4/spreadsheets/{id}/values/{range}``       values.update
* ``POST /v4/spreadsheets/{id}/values:batchUpdate``   values.batchUpdate
* ``POST /v4/spreadsheets/{id}:batchUpdate``          appendDimension only
* ``POST /token``                                     OAuth token for a service-account JWT
                                                      (a test key's ``token_uri`` points here)

Cells hold what the analyst sees (the FORMATTED_VALUE text: "1,234", "#REF!"); other render
options are refused, so a client asking for unformatted values fails loudly. Writes beyond the
grid fail as Google's do ("exceeds grid limits"). Every request is recorded for assertions, and
``fail_next(n)`` answers the next n requests with 429 RESOURCE_EXHAUSTED.

``share(key, "reader")`` shares a spreadsheet read-only (Viewer or Commenter): reads work, every
write (values.update, values.batchUpdate, spreadsheets.batchUpdate) answers 403
PERMISSION_DENIED "The caller does not have permission", as Google does, whether or not the
write would change a cell. ``protect(key, title, column)`` protects one column of a worksheet
against this caller: a write touching it answers Google's 400 "protected cell" error.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.sheets_a1 import _CELL, ApiError, _col_index, _col_letters, _quoted, split_range


@dataclass
class Worksheet:
    title: str
    sheet_id: int
    cells: list[list[str]] = field(default_factory=list)  # row-major, ragged; "" is an empty cell
    row_count: int = 1000
    column_count: int = 26

    def get(self, row: int, col: int) -> str:  # 0-based
        return self.cells[row][col] if row < len(self.cells) and col < len(self.cells[row]) else ""

    def set(self, row: int, col: int, text: str) -> None:
        while len(self.cells) <= row:
            self.cells.append([])
        line = self.cells[row]
        while len(line) <= col:
            line.append("")
        line[col] = text

    def trimmed(self, top: int, left: int, bottom: int, right: int) -> list[list[str]]:
        """Values of a block as the API returns them: trailing empty cells and rows dropped."""
        out = []
        for r in range(top, bottom):
            row = [self.get(r, c) for c in range(left, right)]
            while row and row[-1] == "":
                row.pop()
            out.append(row)
        while out and not out[-1]:
            out.pop()
        return out


@dataclass
class Recorded:
    method: str
    path: str  # decoded
    params: dict[str, list[str]]
    body: Any
    status: int
    authorization: str = ""  # the Authorization header, to assert the bearer token was sent


class FakeSheetsApi:
    """The double. Use as a context manager; ``endpoint`` is what MLBATCH_SHEETS_ENDPOINT takes."""

    TOKEN = "ya29.fake-access-token"

    def __init__(self) -> None:
        self.spreadsheets: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self._fail: list[int] = []
        self.roles: dict[str, str] = {}  # spreadsheet key -> "writer" (the default) or "reader"
        self.protected: dict[str, set[tuple[str, int]]] = {}  # key -> {(worksheet, 0-based column)}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up, used by tests -------------------------------------------------------------------
    def add_spreadsheet(self, key: str, title: str = "Labels") -> None:
        self.spreadsheets[key] = {"title": title, "sheets": []}

    def add_worksheet(
        self, key: str, title: str, rows: list[list[str]], *, row_count: int = 1000, column_count: int = 26
    ) -> Worksheet:
        if key not in self.spreadsheets:
            self.add_spreadsheet(key)
        sheets = self.spreadsheets[key]["sheets"]
        ws = Worksheet(title, sheet_id=len(sheets) * 1000 + 7, cells=[list(r) for r in rows])
        ws.row_count = max(row_count, len(rows))
        ws.column_count = max([column_count, *(len(r) for r in rows)])
        sheets.append(ws)
        return ws

    def worksheet(self, key: str, title: str) -> Worksheet:
        for ws in self.spreadsheets[key]["sheets"]:
            if ws.title == title:
                return ws
        raise KeyError(title)

    def share(self, key: str, role: str) -> None:
        """How the spreadsheet is shared with the caller: "writer" (Editor) or "reader" (Viewer)."""
        if role not in ("writer", "reader"):
            raise ValueError(f"role must be writer or reader, not {role!r}")
        self.roles[key] = role

    def protect(self, key: str, title: str, column: int) -> None:
        """Protect a worksheet's column (0-based) against edits by the caller."""
        self.protected.setdefault(key, set()).add((title, column))

    def fail_next(self, n: int, code: int = 429) -> None:
        """Answer the next n requests with ``code`` (429: quota exceeded, as Google words it)."""
        with self._lock:
            self._fail.extend([code] * n)

    def calls(self, kind: str) -> list[Recorded]:
        """Recorded requests of one kind: metadata, get, batchGet, update, batchUpdate, sheetBatchUpdate."""
        return [r for r in self.requests if _kind(r.method, r.path) == kind and r.status == 200]

    # -- server ----------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeSheetsApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload = api.handle(self.command, self.path, raw, self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- the API ---------------------------------------------------------------------------------
    def handle(self, method: str, target: str, raw: bytes, authorization: str = "") -> tuple[int, Any]:
        parts = urlsplit(target)
        path, params = unquote(parts.path), parse_qs(parts.query, keep_blank_values=True)
        if path == "/token":  # form-encoded JWT grant; the assertion is not verified
            form = parse_qs(raw.decode())
            with self._lock:
                self.requests.append(Recorded(method, path, {}, {k: v[0] for k, v in form.items()}, 200))
            return 200, {"access_token": self.TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        body = json.loads(raw) if raw else None
        with self._lock:
            fail = self._fail.pop(0) if self._fail else None
        try:
            if fail is not None:
                raise ApiError(
                    fail,
                    "RESOURCE_EXHAUSTED" if fail == 429 else "UNAVAILABLE",
                    "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user'",
                )
            status, payload = 200, self._dispatch(method, path, params, body)
        except ApiError as e:
            status, payload = e.code, {"error": {"code": e.code, "message": e.message, "status": e.status}}
        with self._lock:
            self.requests.append(Recorded(method, path, params, body, status, authorization))
        return status, payload

    def _dispatch(self, method: str, path: str, params: dict[str, list[str]], body: Any) -> Any:
        m = re.fullmatch(r"/v4/spreadsheets/([^/:]+)(.*)", path)
        if not m:
            raise ApiError(404, "NOT_FOUND", f"unknown path {path}")
        key, rest = m.groups()
        book = self.spreadsheets.get(key)
        if book is None:
            raise ApiError(404, "NOT_FOUND", "Requested entity was not found.")
        kind = _kind(method, path)
        if kind in ("update", "batchUpdate", "sheetBatchUpdate") and self.roles.get(key) == "reader":
            raise ApiError(403, "PERMISSION_DENIED", "The caller does not have permission")
        if kind == "metadata":
            return self._metadata(key, book)
        if kind == "batchGet":
            self._formatted_only(params)
            return {"spreadsheetId": key, "valueRanges": [self._read(book, r) for r in params.get("ranges", [])]}
        if kind == "get":
            self._formatted_only(params)
            return self._read(book, rest.removeprefix("/values/"))
        if kind == "batchUpdate":
            responses = [
                self._write(key, book, d["range"], d["values"], body["valueInputOption"]) for d in body["data"]
            ]
            return {
                "spreadsheetId": key,
                "totalUpdatedRows": sum(r["updatedRows"] for r in responses),
                "totalUpdatedColumns": max((r["updatedColumns"] for r in responses), default=0),
                "totalUpdatedCells": sum(r["updatedCells"] for r in responses),
                "totalUpdatedSheets": len({r["updatedRange"].rpartition("!")[0] for r in responses}),
                "responses": responses,
            }
        if kind == "update":
            option = params.get("valueInputOption", [""])[0]
            return self._write(key, book, rest.removeprefix("/values/"), body["values"], option)
        if kind == "sheetBatchUpdate":
            return {"spreadsheetId": key, "replies": [self._structural(book, r) for r in body["requests"]]}
        raise ApiError(404, "NOT_FOUND", f"the double does not implement {method} {path}")

    @staticmethod
    def _formatted_only(params: dict[str, list[str]]) -> None:
        option = params.get("valueRenderOption", ["FORMATTED_VALUE"])[0]
        if option != "FORMATTED_VALUE":
            raise ApiError(400, "INVALID_ARGUMENT", f"the double serves FORMATTED_VALUE only, not {option}")

    @staticmethod
    def _metadata(key: str, book: dict[str, Any]) -> Any:
        return {
            "spreadsheetId": key,
            "properties": {"title": book["title"], "locale": "en_US", "timeZone": "Etc/GMT"},
            "sheets": [
                {
                    "properties": {
                        "sheetId": ws.sheet_id,
                        "title": ws.title,
                        "index": i,
                        "sheetType": "GRID",
                        "gridProperties": {"rowCount": ws.row_count, "columnCount": ws.column_count},
                    }
                }
                for i, ws in enumerate(book["sheets"])
            ],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{key}/edit",
        }

    def _locate(self, book: dict[str, Any], a1: str) -> tuple[Worksheet, int, int, int, int]:
        """Worksheet and 0-based half-open block [top, bottom) x [left, right) of an A1 range."""
        title, cells = split_range(a1)
        ws = next((s for s in book["sheets"] if s.title == title), None)
        if ws is None:
            raise ApiError(400, "INVALID_ARGUMENT", f"Unable to parse range: {a1}")
        if not cells:
            return ws, 0, 0, ws.row_count, ws.column_count
        start, _, end = cells.partition(":")
        end = end or start
        m1, m2 = _CELL.match(start), _CELL.match(end)
        if not m1 or not m2 or not (m1.group(1) or m1.group(2)):
            raise ApiError(400, "INVALID_ARGUMENT", f"Unable to parse range: {a1}")
        left = _col_index(m1.group(1)) if m1.group(1) else 0
        top = int(m1.group(2)) - 1 if m1.group(2) else 0
        right = _col_index(m2.group(1)) + 1 if m2.group(1) else ws.column_count
        bottom = int(m2.group(2)) if m2.group(2) else ws.row_count
        return ws, top, left, bottom, right

    def _a1(self, ws: Worksheet, top: int, left: int, bottom: int, right: int) -> str:
        return f"{_quoted(ws.title)}!{_col_letters(left)}{top + 1}:{_col_letters(right - 1)}{bottom}"

    def _read(self, book: dict[str, Any], a1: str) -> Any:
        ws, top, left, bottom, right = self._locate(book, a1)
        out: dict[str, Any] = {"range": self._a1(ws, top, left, bottom, right), "majorDimension": "ROWS"}
        values = ws.trimmed(top, left, bottom, right)
        if values:  # like Google: no "values" key at all for an empty range
            out["values"] = values
        return out

    def _write(self, key: str, book: dict[str, Any], a1: str, values: list[list[Any]], option: str) -> Any:
        if option not in ("RAW", "USER_ENTERED"):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid valueInputOption: must be RAW or USER_ENTERED")
        ws, top, left, bottom, right = self._locate(book, a1)
        width_asked = max((len(r) for r in values), default=0)
        if any((ws.title, c) in self.protected.get(key, set()) for c in range(left, left + width_asked)):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "You are trying to edit a protected cell or object. Please contact the spreadsheet owner to "
                "remove protection if you need to edit.",
            )
        height = len(values)
        width = max((len(r) for r in values), default=0)
        if top + height > ws.row_count or left + width > ws.column_count:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Range ({a1}) exceeds grid limits. Max rows: {ws.row_count}, max columns: {ws.column_count}",
            )
        if height > bottom - top or width > right - left:
            raise ApiError(400, "INVALID_ARGUMENT", f"Requested writing within range [{a1}], but tried writing more")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                ws.set(top + i, left + j, "" if v is None else str(v))
        return {
            "spreadsheetId": key,
            "updatedRange": self._a1(ws, top, left, top + height, left + width),
            "updatedRows": height,
            "updatedColumns": width,
            "updatedCells": sum(len(r) for r in values),
        }

    @staticmethod
    def _structural(book: dict[str, Any], request: dict[str, Any]) -> Any:
        if set(request) != {"appendDimension"}:
            raise ApiError(400, "INVALID_ARGUMENT", f"the double implements appendDimension only, not {list(request)}")
        spec = request["appendDimension"]
        ws = next((s for s in book["sheets"] if s.sheet_id == spec["sheetId"]), None)
        if ws is None:
            raise ApiError(400, "INVALID_ARGUMENT", f"No grid with id: {spec['sheetId']}")
        if spec["dimension"] == "COLUMNS":
            ws.column_count += int(spec["length"])
        else:
            ws.row_count += int(spec["length"])
        return {}


def _kind(method: str, path: str) -> str:
    if path == "/token":
        return "token"
    if path.endswith(":batchGet"):
        return "batchGet"
    if path.endswith("/values:batchUpdate"):
        return "batchUpdate"
    if path.endswith(":batchUpdate"):
        return "sheetBatchUpdate"
    if "/values/" in path:
        return "update" if method == "PUT" else "get"
    return "metadata"


def service_account_key(token_uri: str, key_id: str = "abc123", project: str = "test") -> dict[str, str]:
    """A Google service-account key with a real RSA key (this double checks the JWT grant)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": f"labels@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
