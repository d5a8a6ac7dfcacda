"""A label sheet as read (:class:`SheetData`) and where each row's verdict goes
(:func:`plan_verdicts`): shared by both sources (:mod:`mlbatch.labels.sheets` for Google Sheets,
:mod:`mlbatch.labels.source` for the CSV), so the sheet and the CSV show the same verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlbatch.spec.label_text import normalize


@dataclass(frozen=True)
class SheetData:
    header: list[str]
    rows: list[list[str]]
    origin: str  # for messages: the file path or the sheet URL and worksheet
    # Google Sheets only: what the write-back needs from the read (no second metadata call).
    sheet_id: int | None = None
    grid_columns: int = 0
    client: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class VerdictPlan:
    column: int  # 0-based index of the write-back column (len(widest row) when it is new)
    new_header: bool  # the column is missing: its header cell is written too
    cells: dict[int, str]  # sheet row (header = 1) -> new text, only cells whose text changes

    @property
    def empty(self) -> bool:
        return not self.cells and not self.new_header


def find_column(header: list[str], column: str) -> int | None:
    """Index of ``column`` in the header, matched like the checker matches (case, padding)."""
    want = normalize(column).casefold()
    for idx, cell in enumerate(header):
        if normalize(cell).casefold() == want:
            return idx
    return None


def plan_verdicts(sheet: SheetData, column: str, verdicts: dict[int, str]) -> VerdictPlan:
    """Which write-back cells change: new verdicts, and stale ones next to rows now blank.

    With no verdicts at all (the header lacks a required column, or the sheet is empty) nothing
    is planned: the old verdicts stay until a sync can say something about each row.
    """
    idx = find_column(sheet.header, column)
    if not verdicts:
        return VerdictPlan(idx if idx is not None else len(sheet.header), False, {})
    new_header = idx is None
    if idx is None:
        # After every cell in use, so an unlabelled column of notes is never overwritten.
        idx = max(len(r) for r in [sheet.header, *sheet.rows])
    cells: dict[int, str] = {}
    for n, row in enumerate(sheet.rows, start=2):
        old = row[idx] if idx < len(row) else ""
        new = verdicts.get(n, "")
        if new != old:
            cells[n] = new
    return VerdictPlan(idx, new_header, cells)
