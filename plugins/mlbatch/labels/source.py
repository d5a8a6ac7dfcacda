"""Where analysts keep labels: a Google Sheet in production, its CSV export in the demo.

One read per sync returns the sheet as the analyst sees it (header + rows of text); one
batched write puts each row's verdict into the ``write_back`` column and touches no other cell.
Both sources share :func:`plan_verdicts`, so the sheet and the CSV show the same verdicts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbatch.env import Environment
from mlbatch.labels.check import read_csv
from mlbatch.labels.text import normalize
from mlbatch.spec import FileSource, ModelSpec


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


def csv_path(spec: ModelSpec, env: Environment) -> Path:
    assert isinstance(spec.labels.source, FileSource)
    path = Path(spec.labels.source.file)
    return path if path.is_absolute() else env.home / path


def read_sheet(spec: ModelSpec, env: Environment) -> SheetData:
    source = spec.labels.source
    if isinstance(source, FileSource):
        path = csv_path(spec, env)
        if not path.exists():
            raise FileNotFoundError(
                f"{spec.name}: label file {path} does not exist (labels.source.file in {spec.path})"
            )
        header, rows = read_csv(path)
        return SheetData(header, rows, str(path))
    from mlbatch.labels.sheets import read_worksheet

    return read_worksheet(source)


def write_verdicts(spec: ModelSpec, env: Environment, sheet: SheetData, verdicts: dict[int, str]) -> int:
    """Write each row's verdict into the write-back column; return the cells changed."""
    column = spec.labels.write_back
    if not column:
        return 0
    source = spec.labels.source
    if not isinstance(source, FileSource):
        from mlbatch.labels.sheets import write_verdicts as write_sheet

        return write_sheet(source, sheet, column, verdicts)
    plan = plan_verdicts(sheet, column, verdicts)
    if plan.empty:
        return 0
    header = list(sheet.header)
    width = plan.column + 1
    header += [""] * (width - len(header))
    if plan.new_header:
        header[plan.column] = column
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for n, row in enumerate(sheet.rows, start=2):  # the header is sheet row 1
        if n in plan.cells:
            row = list(row) + [""] * (width - len(row))
            row[plan.column] = plan.cells[n]
        writer.writerow(row)
    path = csv_path(spec, env)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    tmp.replace(path)  # the analyst's file is never left half written
    return len(plan.cells)
