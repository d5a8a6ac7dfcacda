"""Repeated keys in a stream of record batches, in bounded memory: the uniqueness check of the
features gate (the unload) and of the prediction gate (the scored day).

Keeping every key to count the distinct ones grows with the day: at 10M rows the features gate
peaked at 1.6 GB that way. DuckDB's ``GROUP BY`` spills to disk past its memory limit, so the
count costs the same memory at 10M rows as at 1M. The caller's own per-batch work (null counts,
histograms, statistics) rides along the one pass DuckDB pulls, through ``on_batch``.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

DUCKDB_MEMORY_LIMIT = "256MB"
EXAMPLES = 3


def repeated_keys(
    batches: Iterable[pa.RecordBatch], key: str, on_batch: Callable[[pa.RecordBatch], None] | None = None
) -> tuple[int, list[Any]]:
    """(rows beyond the first per non-null key, up to three of the most repeated keys), in one
    pass over ``batches``; ``on_batch`` sees every whole batch on the way. Null keys are not
    counted: the gates report them apart."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return 0, []
    schema = pa.schema([first.schema.field(key).with_name("k")])

    def keys() -> Iterable[pa.RecordBatch]:
        for batch in itertools.chain([first], batches):
            if on_batch is not None:
                on_batch(batch)
            yield pa.record_batch([batch.column(key)], schema=schema)

    import duckdb  # only here: a gate that finds no rows never loads it

    with tempfile.TemporaryDirectory(prefix="mlbatch-keys-") as spill, duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.register("day_keys", pa.RecordBatchReader.from_batches(schema, keys()))
        con.execute(
            "CREATE TEMP TABLE repeated AS SELECT k, count(*) AS n FROM day_keys "
            "WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1"
        )
        total = con.execute("SELECT coalesce(sum(n - 1), 0) FROM repeated").fetchone()
        assert total is not None  # an aggregate without GROUP BY returns one row
        extra = total[0]
        examples = [r[0] for r in con.execute(f"SELECT k FROM repeated ORDER BY n DESC, 1 LIMIT {EXAMPLES}").fetchall()]
    return int(extra), examples


def repeated_detail(key: str, examples: list[Any]) -> str:
    """How a gate names the repeats: the key column and the examples, as both gates report them."""
    return f"{key}: repeated keys e.g. {examples}" if examples else key
