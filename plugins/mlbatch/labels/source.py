"""Where analysts keep labels: a Google Sheet in production, its CSV export in the demo.

One read per sync returns the sheet as the analyst sees it (header + rows of text); one
batched write puts each row's verdict into the ``write_back`` column and touches no other cell.
Both sources share :func:`plan_verdicts`, so the sheet and the CSV show the same verdicts.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mlbatch.backends.env import Environment
from mlbatch.labels.check import read_csv
from mlbatch.labels.grid import SheetData, plan_verdicts
from mlbatch.labels.sheets import read_worksheet
from mlbatch.labels.sheets import write_verdicts as write_sheet
from mlbatch.spec import FileSource, ModelSpec


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
    return read_worksheet(source)


def write_verdicts(spec: ModelSpec, env: Environment, sheet: SheetData, verdicts: dict[int, str]) -> int:
    """Write each row's verdict into the write-back column; return the cells changed."""
    column = spec.labels.write_back
    if not column:
        return 0
    source = spec.labels.source
    if not isinstance(source, FileSource):
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
