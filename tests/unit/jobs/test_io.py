"""Reading parquet in the jobs: a row group's column chunks come in a few requests, and only that
row group is held (``jobs.io.iter_batches``; ``mlbatch.backends.store.row_group_batches`` is its twin)."""

from __future__ import annotations

import io as stdio

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends.store import row_group_batches

from jobs import io

COLUMNS, GROUPS, GROUP_ROWS = 40, 3, 50_000


class CountingFile(stdio.BytesIO):
    """An in-memory file that counts the reads pyarrow makes (each one a GET on S3)."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read(size)


@pytest.fixture(scope="module")
def parquet_bytes() -> bytes:
    rng = np.random.default_rng(0)
    n = GROUPS * GROUP_ROWS
    table = pa.table({"key": np.arange(n), **{f"f{i}": rng.random(n) for i in range(COLUMNS)}})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=GROUP_ROWS)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("iterate", [io.iter_batches, row_group_batches], ids=["jobs.io", "mlbatch.backends.store"])
def test_every_row_in_order_with_a_few_reads_per_row_group(parquet_bytes, iterate):
    f = CountingFile(parquet_bytes)
    pf = pq.ParquetFile(pa.PythonFile(f, mode="r"), pre_buffer=True)
    footer_reads = f.reads
    keys = [b.column("key") for b in iterate(pf, 20_000, ["key", "f0", "f39"])]
    assert pa.chunked_array(keys).to_numpy().tolist() == list(range(GROUPS * GROUP_ROWS))
    # Three columns of three row groups: column chunk by column chunk that is 9 reads at least;
    # pre-buffered by row group, adjacent chunks (key, f0) coalesce into one read and the distant
    # f39 is a second: two reads a group.
    assert f.reads - footer_reads <= 2 * GROUPS


def test_the_default_reader_asks_once_per_column_chunk(parquet_bytes):
    """What the twins replace: pre_buffer off reads every column chunk on its own."""
    f = CountingFile(parquet_bytes)
    pf = pq.ParquetFile(pa.PythonFile(f, mode="r"), pre_buffer=False)
    footer_reads = f.reads
    rows = sum(b.num_rows for b in pf.iter_batches(batch_size=20_000, columns=["key", "f0", "f39"]))
    assert rows == GROUPS * GROUP_ROWS
    assert f.reads - footer_reads >= 3 * GROUPS, f.reads
