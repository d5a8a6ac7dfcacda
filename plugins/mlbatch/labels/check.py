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
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mlbatch.errors import UsageError
from mlbatch.labels.rows import Reason, RowRules, RowVerdict, check_row, is_blank
from mlbatch.spec.label_text import class_index, normalize, quote

__all__ = ["CheckReport", "LabelFileError", "Rejection", "check_labels", "content_hash", "normalize", "read_csv"]

_NEWLINES = re.compile(r"\r\n?")
_MAX_ROWS_SHOWN = 5  # row numbers listed per conflicting label


class LabelFileError(UsageError, ValueError):
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

    Each row goes through :func:`mlbatch.labels.rows.check_row`; this driver finds the columns,
    collects the verdicts, rejects every row of a key labelled two ways, and decides whether
    the sheet is blocked. ``ignore_column`` names the verdict (write-back) column: its cells are
    ours, not the analyst's data, so a row holding only an old verdict is a blank row.

    Raises ``ValueError`` only for bad arguments (a spec problem); anything wrong with the sheet
    itself ends up in the report.
    """
    if key_type not in ("integer", "string"):
        raise ValueError(f"key_type must be 'integer' or 'string', not {key_type!r}")
    if not 0 <= max_invalid_fraction <= 1:
        raise ValueError(f"max_invalid_fraction must be between 0 and 1, not {max_invalid_fraction!r}")
    class_by_fold = class_index(classes)  # the spec's own rule (mlbatch.spec validates with it)

    header_problem, ki, li = _find_columns(header, key_column, label_column)
    if ignore_column is not None:
        rows = _without_column(header, rows, ignore_column)
    if header_problem:
        nonblank = sum(1 for row in rows if not is_blank(row))
        return CheckReport(model=model, rows=nonblank, accepted=0, blocked=True, message=header_problem)

    rules = RowRules(key_column, label_column, ki, li, list(classes), class_by_fold, key_type == "integer")
    tally = _Tally()
    for i, row in enumerate(rows):
        verdict = check_row(row, rules)
        if verdict is not None:
            tally.add(i + 2, verdict)  # sheet row numbers: the header is row 1
    tally.reject_conflicts()
    return tally.report(model, max_invalid_fraction)


Seen = tuple[int, RowVerdict]  # (sheet row, its verdict) of a valid row


@dataclass
class _Tally:
    """The verdicts of a sheet's rows, and which keys are labelled two ways."""

    nonblank: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    verdicts: dict[int, str] = field(default_factory=dict)
    first: dict[int | str, Seen] = field(default_factory=dict)  # a key's first valid row
    repeats: dict[int | str, list[Seen]] = field(default_factory=dict)  # keys seen twice or more (few)
    conflicting: set[int | str] = field(default_factory=set)

    def reject(self, row_no: int, key_text: str, reason: Reason, value: str, message: str) -> None:
        self.rejected.append(Rejection(row=row_no, key=key_text, reason=reason, value=value))
        self.verdicts[row_no] = message

    def add(self, row_no: int, verdict: RowVerdict) -> None:
        key_text, key, cls, _raw_label, problem = verdict
        self.nonblank += 1
        if problem is not None:
            self.reject(row_no, key_text, *problem)
            return
        assert key is not None  # check_row: a row without a problem has a parsed key
        self.verdicts[row_no] = "ok"  # overwritten by reject_conflicts if the key conflicts
        seen = self.first.get(key)
        if seen is None:
            self.first[key] = (row_no, verdict)
            return
        self.repeats.setdefault(key, [seen]).append((row_no, verdict))
        if seen[1][2] != cls:
            self.conflicting.add(key)

    def reject_conflicts(self) -> None:
        """Which row's label is right is the analyst's call, so every row of a conflicting key is
        rejected and each one points at the others."""
        for key in self.conflicting:
            entries = self.repeats[key]
            shown = str(key) if isinstance(key, int) else quote(key)
            for row_no, (key_text, _key, cls, raw_label, _problem) in entries:
                others = _describe_others(row_no, cls, entries)
                self.reject(row_no, key_text, "conflict", raw_label, f"conflict: {shown} is also labelled {others}")
        self.rejected.sort(key=_by_row)

    def report(self, model: str, max_invalid_fraction: float) -> CheckReport:
        labels = {k: v[2] for k, (_, v) in self.first.items() if k not in self.conflicting and v[2] is not None}
        blocked, message = _verdict(self.nonblank, len(self.rejected), len(labels), max_invalid_fraction)
        if blocked:
            labels = {}  # a blocked sheet writes nothing; an empty mapping makes that impossible to miss
        return CheckReport(
            model=model,
            rows=self.nonblank,
            accepted=len(labels),
            rejected=self.rejected,
            blocked=blocked,
            message=message,
            labels=labels,
            verdicts=self.verdicts,
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
        shown = ", ".join(map(quote, found)) if found else "none"
        plural = "s" if len(missing) > 1 else ""
        return (
            f"blocked: missing column{plural} {', '.join(map(quote, missing))} (found columns: {shown})",
            -1,
            -1,
        )
    # Two columns with the same title: which one holds the labels is a guess, and a wrong guess
    # writes wrong labels, so this blocks rather than picking one.
    for name, fold in wanted.items():
        if len(positions[fold]) > 1:
            cols = ", ".join(_column_letter(i) for i in positions[fold])
            return f"blocked: column {quote(name)} appears more than once (columns {cols}); keep one", -1, -1
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


def _describe_others(row_no: int, cls: str | None, entries: list[Seen]) -> str:
    """E.g. '"female" on row 7' or '"female" on rows 7, 9; "other" on row 12'."""
    by_class: dict[str, list[int]] = {}
    for other_row, (_key_text, _key, other_cls, _raw, _problem) in entries:
        if other_cls != cls and other_row != row_no and other_cls is not None:
            by_class.setdefault(other_cls, []).append(other_row)
    parts = []
    for other_cls, row_nos in by_class.items():
        shown = ", ".join(str(r) for r in row_nos[:_MAX_ROWS_SHOWN])
        more = f" and {len(row_nos) - _MAX_ROWS_SHOWN} more" if len(row_nos) > _MAX_ROWS_SHOWN else ""
        word = "rows" if len(row_nos) > 1 else "row"
        parts.append(f"{quote(other_cls)} on {word} {shown}{more}")
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
