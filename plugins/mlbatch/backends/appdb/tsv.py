"""The day's rows as text in MySQL's ``LOAD DATA`` default format, encoded by Arrow (no Python loop per row)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlbatch.backends.appdb.checksum import RowChecksum
from mlbatch.backends.appdb.publisher import Day, step

# FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' are LOAD DATA's defaults, so
# the statement leaves them out (spelling '\\' breaks under sql_mode NO_BACKSLASH_ESCAPES). In
# that format a backslash, tab, newline (and CR) inside a value are written as \\, \t, \n, \r,
# and NULL as \N; a literal "\N" text becomes "\\N" because the backslash is escaped first.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def tsv_field(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        for raw, escaped in _ESCAPES:
            arr = pc.replace_substring(arr, raw, escaped)
    else:  # numbers and dates: Arrow's text is round-trip exact ("0.1", "1e-7", "2026-11-22")
        arr = pc.cast(arr, pa.string())
    return pc.fill_null(arr, "\\N")


def tsv_chunk(columns: Sequence[pa.Array]) -> pa.Buffer:
    """The rows of equal-length arrays as LOAD DATA text, one line per row (vectorised, no Python loop)."""
    lines = pc.binary_join_element_wise(*[tsv_field(c) for c in columns], "\t")
    lines = pc.binary_join_element_wise(lines, "", "\n")  # "row" + "\n" + "": every line ends in \n
    lines = lines.cast(pa.large_string()) if pa.types.is_string(lines.type) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    if len(offsets) < 2:
        return pa.py_buffer(b"")
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def day_columns(batch: pa.RecordBatch, ds: date | str) -> list[pa.Array]:
    """A batch of predictions (entity_key, model_version, label, score) as the columns of
    ``mysql_sql.COLUMNS``, with the day filled in (the staging table is one day's partition)."""
    day = pa.repeat(pa.scalar(ds if isinstance(ds, str) else ds.isoformat()), batch.num_rows)
    return [
        batch.column("entity_key"),
        day,
        batch.column("model_version"),
        batch.column("label"),
        batch.column("score"),
    ]


def tsv_writer(
    day: Day, batches: Iterator[pa.RecordBatch], total: RowChecksum, lock: threading.Lock
) -> Callable[[BinaryIO], None]:
    """Writes ``batches`` as TSV; their checksum, taken while the load runs, is added to ``total``."""

    def write(out: BinaryIO) -> None:
        part = RowChecksum()
        with step("sorted TSV", day.table.name):
            for batch in batches:
                part.update(batch)
                out.write(tsv_chunk(day_columns(batch, day.ds)))
        with lock:
            total.merge(part)

    return write
