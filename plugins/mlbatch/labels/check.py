"""Pure checker of an analyst's label sheet: header + rows in, :class:`CheckReport` out.

No database, no network, no Airflow: the sync task and the CLI both call this and decide what to
write. Cell text is only ever compared and parsed as an integer, never executed or interpolated.

Row numbers are sheet row numbers (header = row 1, first data row = row 2) so an analyst can find
the cell; blank rows are skipped without renumbering for the same reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Reason = Literal["cell_error", "missing_key", "invalid_key", "missing_label", "unknown_label", "conflict"]
KeyType = Literal["integer", "string"]

# What Google Sheets / Excel put in a cell (and in its CSV export) when a formula fails.
SHEET_ERRORS = frozenset(
    {
        "#REF!",
        "#N/A",
        "#VALUE!",
        "#DIV/0!",
        "#NAME?",
        "#NUM!",
        "#NULL!",
        "#ERROR!",
        "#SPILL!",
        "#CALC!",
        "#GETTING_DATA",
    }
)

MAX_STRING_KEY = 255
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# ASCII digits only: NFKC has already folded full-width digits, and other scripts' digits
# (which str.isdigit and int() would accept) are not what the warehouse key holds.
_INT_KEY = re.compile(r"-?[0-9]+", re.ASCII)
_NEWLINES = re.compile(r"\r\n?")
_MAX_SHOWN = 80  # longest cell text quoted back in a verdict
_MAX_ROWS_SHOWN = 5  # row numbers listed per conflicting label


class LabelFileError(ValueError):
    """The CSV export cannot be read; ``str()`` names the file and where it went wrong."""


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(description="1-based sheet row (the header is row 1).")
    key: str = Field(description="Normalized key text as shown in the sheet; may be empty.")
    reason: Reason
    # For the analyst's verdict only: raw text may hold personal data, so it stays out of the
    # JSON contract that goes to logs.
    value: str = Field("", exclude=True, repr=False)


class CheckReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    rows: int = Field(description="Non-blank data rows.")
    accepted: int = Field(description="Distinct keys to write (0 when blocked: nothing is written).")
    rejected: list[Rejection] = Field(default_factory=list, description="Sorted by row.")
    blocked: bool
    message: str
    # Not part of the contract: what to write, and what to write back next to each sheet row.
    labels: dict[int | str, str] = Field(default_factory=dict, exclude=True, repr=False)
    verdicts: dict[int, str] = Field(default_factory=dict, exclude=True, repr=False)

    def to_contract(self) -> dict[str, object]:
        """The JSON users' scripts rely on: exactly these keys, rejected sorted by row."""
        return {
            "model": self.model,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": [{"row": r.row, "key": r.key, "reason": r.reason} for r in sorted(self.rejected, key=_by_row)],
            "blocked": self.blocked,
            "message": self.message,
        }


def _by_row(r: Rejection) -> int:
    return r.row


def normalize(text: str) -> str:
    """NFKC, drop format characters (zero-width spaces, BOM, ...) anywhere, trim whitespace.

    Format characters are invisible in the sheet, so an analyst cannot see or fix them; they are
    removed inside the value too. ``str.strip()`` trims every ``str.isspace`` character (NBSP and
    U+3000 included, though NFKC has already made those plain spaces).
    """
    if text.isascii():  # fast path: NFKC is the identity and there are no format characters
        return text.strip()
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.strip()


def check_labels(
    header: list[str],
    rows: list[list[str]],
    *,
    model: str,
    key_column: str,
    label_column: str,
    classes: list[str],
    key_type: str = "integer",
    max_invalid_fraction: float = 0.02,
    ignore_column: str | None = None,
) -> CheckReport:
    """Check a label sheet; see the module docstring and :class:`CheckReport`.

    ``ignore_column`` names the verdict (write-back) column: its cells are ours, not the analyst's
    data, so a row holding only an old verdict is a blank row, not a row with a missing key.

    Raises ``ValueError`` only for bad arguments (a spec problem); anything wrong with the sheet
    itself ends up in the report.
    """
    if key_type not in ("integer", "string"):
        raise ValueError(f"key_type must be 'integer' or 'string', not {key_type!r}")
    if not 0 <= max_invalid_fraction <= 1:
        raise ValueError(f"max_invalid_fraction must be between 0 and 1, not {max_invalid_fraction!r}")
    class_by_fold: dict[str, str] = {}
    for cls in classes:
        fold = normalize(cls).casefold()
        if not fold:
            raise ValueError(f"classes contains an empty class: {classes!r}")
        if fold in class_by_fold:
            raise ValueError(f"classes {class_by_fold[fold]!r} and {cls!r} are the same label ignoring case")
        class_by_fold[fold] = cls
    if not class_by_fold:
        raise ValueError("classes is empty: at least one allowed label is needed")

    header_problem, ki, li = _find_columns(header, key_column, label_column)
    if ignore_column is not None:
        rows = _without_column(header, rows, ignore_column)
    if header_problem:
        nonblank = sum(1 for row in rows if not _is_blank(row))
        return CheckReport(model=model, rows=nonblank, accepted=0, blocked=True, message=header_problem)

    integer_keys = key_type == "integer"
    rejected: list[Rejection] = []
    verdicts: dict[int, str] = {}
    # key -> (class, row, key text, raw label) of its first valid row
    first: dict[int | str, tuple[str, int, str, str]] = {}
    # key -> all its valid rows, only for keys seen more than once (usually few)
    repeats: dict[int | str, list[tuple[str, int, str, str]]] = {}
    conflicting: set[int | str] = set()
    nonblank = 0

    def reject(row_no: int, key_text: str, reason: Reason, value: str, verdict: str) -> None:
        rejected.append(Rejection(row=row_no, key=key_text, reason=reason, value=value))
        verdicts[row_no] = verdict

    for i, row in enumerate(rows):
        row_no = i + 2
        n = len(row)
        raw_key = row[ki] if ki < n else ""
        raw_label = row[li] if li < n else ""
        key_text = normalize(raw_key)
        label_text = normalize(raw_label)
        if not key_text and not label_text and _is_blank(row):
            continue
        nonblank += 1

        if key_text[:1] == "#" and key_text.upper() in SHEET_ERRORS:
            reject(row_no, key_text, "cell_error", raw_key, f"cell_error: the key cell shows {_quote(raw_key)}")
            continue
        if label_text[:1] == "#" and label_text.upper() in SHEET_ERRORS:
            reject(
                row_no,
                key_text,
                "cell_error",
                raw_label,
                f"cell_error: the label cell shows {_quote(raw_label)}",
            )
            continue
        if not key_text:
            reject(row_no, "", "missing_key", raw_key, f"missing_key: the {_quote(key_column)} cell is empty")
            continue
        key: int | str | None
        key, why = _parse_integer(key_text) if integer_keys else _parse_string(key_text)
        if key is None:
            reject(row_no, key_text, "invalid_key", raw_key, f"invalid_key: {_quote(raw_key)} {why}")
            continue
        if not label_text:
            reject(
                row_no,
                key_text,
                "missing_label",
                raw_label,
                f"missing_label: the {_quote(label_column)} cell is empty",
            )
            continue
        cls = class_by_fold.get(label_text.casefold())
        if cls is None:
            reject(
                row_no,
                key_text,
                "unknown_label",
                raw_label,
                f"unknown_label: {_quote(raw_label)} is not one of {', '.join(map(_quote, classes))}",
            )
            continue

        entry = (cls, row_no, key_text, raw_label)
        verdicts[row_no] = "ok"  # overwritten below if the key turns out to conflict
        seen = first.get(key)
        if seen is None:
            first[key] = entry
            continue
        repeats.setdefault(key, [seen]).append(entry)
        if seen[0] != cls:
            conflicting.add(key)

    # Second pass, over conflicting keys only: which row's label is right is the analyst's call,
    # so every row of the key is rejected and each one points at the others.
    for key in conflicting:
        entries = repeats[key]
        for cls, row_no, key_text, raw_label in entries:
            others = _describe_others(cls, row_no, entries)
            shown = str(key) if isinstance(key, int) else _quote(key)
            reject(row_no, key_text, "conflict", raw_label, f"conflict: {shown} is also labelled {others}")
    rejected.sort(key=_by_row)

    labels = {key: entry[0] for key, entry in first.items() if key not in conflicting}
    blocked, message = _verdict(nonblank, len(rejected), len(labels), max_invalid_fraction)
    if blocked:
        labels = {}  # a blocked sheet writes nothing; an empty mapping makes that impossible to miss
    return CheckReport(
        model=model,
        rows=nonblank,
        accepted=len(labels),
        rejected=rejected,
        blocked=blocked,
        message=message,
        labels=labels,
        verdicts=verdicts,
    )


def _find_columns(header: list[str], key_column: str, label_column: str) -> tuple[str, int, int]:
    """Return (problem message or "", key index, label index); matching ignores case and padding."""
    positions: dict[str, list[int]] = {}
    for idx, cell in enumerate(header):
        positions.setdefault(normalize(cell).casefold(), []).append(idx)
    wanted = {key_column: normalize(key_column).casefold(), label_column: normalize(label_column).casefold()}
    missing = [name for name, fold in wanted.items() if fold not in positions]
    if missing:
        found = [normalize(c) for c in header if normalize(c)]
        shown = ", ".join(map(_quote, found)) if found else "none"
        plural = "s" if len(missing) > 1 else ""
        return (
            f"blocked: missing column{plural} {', '.join(map(_quote, missing))} (found columns: {shown})",
            -1,
            -1,
        )
    # Two columns with the same title: which one holds the labels is a guess, and a wrong guess
    # writes wrong labels, so this blocks rather than picking one.
    for name, fold in wanted.items():
        if len(positions[fold]) > 1:
            cols = ", ".join(_column_letter(i) for i in positions[fold])
            return f"blocked: column {_quote(name)} appears more than once (columns {cols}); keep one", -1, -1
    return "", positions[wanted[key_column]][0], positions[wanted[label_column]][0]


def _without_column(header: list[str], rows: list[list[str]], column: str) -> list[list[str]]:
    fold = normalize(column).casefold()
    idx = next((i for i, cell in enumerate(header) if normalize(cell).casefold() == fold), None)
    if idx is None:
        return rows
    # Copy only the rows that have something in that column (usually: verdicts of earlier syncs).
    return [row[:idx] + [""] + row[idx + 1 :] if len(row) > idx and row[idx] else row for row in rows]


def _column_letter(idx: int) -> str:
    # Spreadsheet column name (0 -> A, 26 -> AA): what the analyst sees above the header.
    name = ""
    idx += 1
    while idx:
        idx, rem = divmod(idx - 1, 26)
        name = chr(ord("A") + rem) + name
    return name


def _is_blank(row: list[str]) -> bool:
    return all(not normalize(cell) for cell in row)


def _parse_integer(text: str) -> tuple[int | None, str]:
    if len(text) <= 18 and text.isascii() and text.isdigit():  # common case; 18 digits fit in int64
        return int(text), ""
    if not _INT_KEY.fullmatch(text):
        return None, "is not a whole number (digits only, optionally a leading '-')"
    # Checked before int(): a very long digit string is both out of range and slow to convert.
    if len(text.lstrip("-").lstrip("0")) > 19:
        return None, "is out of range for a 64-bit integer key"
    value = int(text)  # leading zeros are fine: "007" is key 7
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None, "is out of range for a 64-bit integer key"
    return value, ""


def _parse_string(text: str) -> tuple[str | None, str]:
    if len(text) > MAX_STRING_KEY:
        return None, f"is longer than {MAX_STRING_KEY} characters ({len(text)})"
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return None, "contains control characters (a line break or tab inside the cell?)"
    return text, ""


def _describe_others(cls: str, row_no: int, entries: list[tuple[str, int, str, str]]) -> str:
    """E.g. '"female" on row 7' or '"female" on rows 7, 9; "other" on row 12'."""
    by_class: dict[str, list[int]] = {}
    for other_cls, other_row, _key_text, _raw in entries:
        if other_cls != cls and other_row != row_no:
            by_class.setdefault(other_cls, []).append(other_row)
    parts = []
    for other_cls, row_nos in by_class.items():
        shown = ", ".join(str(r) for r in row_nos[:_MAX_ROWS_SHOWN])
        more = f" and {len(row_nos) - _MAX_ROWS_SHOWN} more" if len(row_nos) > _MAX_ROWS_SHOWN else ""
        word = "rows" if len(row_nos) > 1 else "row"
        parts.append(f"{_quote(other_cls)} on {word} {shown}{more}")
    return "; ".join(parts)


def _verdict(rows: int, rejected: int, accepted: int, max_invalid_fraction: float) -> tuple[bool, str]:
    if rows == 0:
        return True, "blocked: no data rows"
    share = rejected / rows
    # Division is correctly rounded, so a share exactly at the threshold (20 of 1,000 vs 0.02,
    # 1 of 3 vs 1/3) gives the very same float and is not blocked.
    if share > max_invalid_fraction:
        shown, limit = _percents(share, max_invalid_fraction)
        return True, (f"blocked: {rejected:,} of {rows:,} rows rejected ({shown}) exceeds max_invalid_fraction {limit}")
    return False, f"ok: {rows:,} rows, {accepted:,} labels accepted, {rejected:,} rejected ({share:.1%})"


def _percents(share: float, limit: float) -> tuple[str, str]:
    # One decimal usually; more when one decimal would print "2.0% exceeds 2.0%".
    for digits in (1, 2, 3, 4):
        a, b = f"{share * 100:.{digits}f}%", f"{limit * 100:.{digits}f}%"
        if a != b:
            return a, b
    return a, b


def _quote(text: str) -> str:
    """Double-quoted, with invisible characters spelled out so the analyst can see them."""
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 1] + "…"
    out = []
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch != " " and (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Read a CSV export of the sheet: UTF-8 with or without BOM, CRLF or LF, quoted fields.

    Returns (header, data rows); an empty file gives ([], []). Raises :class:`LabelFileError`
    for bytes that are not UTF-8 (naming the byte offset and line) or malformed CSV.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LabelFileError(
            f"{path}: not valid UTF-8 at byte {e.start} (line {line}): {data[e.start : e.start + 4]!r}; "
            "export the sheet as CSV UTF-8"
        ) from None
    # newline="" keeps CR/LF inside quoted fields for the csv module, as its docs require.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        table = list(reader)
    except csv.Error as e:
        raise LabelFileError(f"{path}: malformed CSV near line {reader.line_num}: {e}") from None
    if not table:
        return [], []
    return table[0], table[1:]


def content_hash(header: list[str], rows: list[list[str]]) -> str:
    """sha256 hex of the normalized sheet content: the same sheet gives the same hash.

    Each cell is normalized like the checker does and line breaks inside cells become LF, so the
    hash ignores a BOM, CRLF vs LF, padding, trailing empty cells and trailing blank rows (none of
    which change what the check says). Blank rows in between are kept: they shift row numbers.
    """
    digest = hashlib.sha256()
    pending_blank = 0
    for i, row in enumerate([header, *rows]):
        cells = [_NEWLINES.sub("\n", normalize(c)) for c in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells and i > 0:
            pending_blank += 1  # written only if a non-blank row follows
            continue
        for _ in range(pending_blank):
            digest.update(b"[]\n")
        pending_blank = 0
        digest.update(json.dumps(cells, ensure_ascii=False, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()
