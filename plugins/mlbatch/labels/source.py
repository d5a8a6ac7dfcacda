"""Where analysts keep labels: a Google Sheet in production, its CSV export in the demo.

One read per sync returns the sheet as the analyst sees it (header + rows of text); one
batched write puts each row's verdict into the ``write_back`` column and touches no other cell.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from mlbatch.env import Environment
from mlbatch.labels.check import read_csv
from mlbatch.spec import FileSource, ModelSpec


@dataclass(frozen=True)
class SheetData:
    header: list[str]
    rows: list[list[str]]
    origin: str  # for messages: the file path or the sheet URL and worksheet


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
    """Write each row's verdict into the write-back column; return the cells written."""
    column = spec.labels.write_back
    if not column:
        return 0
    source = spec.labels.source
    if not isinstance(source, FileSource):
        from mlbatch.labels.sheets import write_verdicts as write_sheet

        return write_sheet(source, sheet, column, verdicts)
    header = list(sheet.header)
    folded = [h.strip().casefold() for h in header]
    if column.casefold() in folded:
        idx = folded.index(column.casefold())
    else:
        header.append(column)
        idx = len(header) - 1
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for n, row in enumerate(sheet.rows, start=2):  # the header is sheet row 1
        row = list(row) + [""] * (len(header) - len(row))
        if n in verdicts:
            row[idx] = verdicts[n]
        writer.writerow(row)
    path = csv_path(spec, env)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    tmp.replace(path)  # the analyst's file is never left half written
    return len(verdicts)
