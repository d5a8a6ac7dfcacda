"""Arrow feature columns -> numbers, shared by every family (no framework imports here).

A column is one of three kinds, decided from its Arrow type at training and saved with the model:
``numeric`` (ints, floats, booleans, decimals; an all-null part too), ``categorical`` (strings)
and ``temporal`` (dates and timestamps, encoded as days since 1970). Scoring checks that a
column keeps its kind, since a string column read as a number (or the reverse) would silently
mean something else.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.cpus import cores
from jobs.io import JobInputError

_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def size_thread_pools() -> int:
    """Size pyarrow's CPU pool (decoding, compute) to :func:`cores` too, as the families size
    theirs; returns the count. pyarrow's own default is every core of the host."""
    n = cores()
    pa.set_cpu_count(n)
    return n


def column_kind(field: pa.Field, family: str) -> str:
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_null(t):
        return "numeric"  # an all-null part: all missing
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "categorical"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "temporal"
    raise JobInputError(
        f"feature column {field.name!r} has type {field.type}, which the {family} family cannot use: "
        "cast it to a number, a string or a date in the feature SQL"
    )


def as_strings(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode() if isinstance(col, pa.Array) else pc.cast(col, col.type.value_type)
    return col if col.type == pa.string() else pc.cast(col, pa.string())


def encode_column(
    name: str, col: pa.ChunkedArray | pa.Array, kind: str, categories: pa.Array | None
) -> np.ndarray | float:
    """float32 values of one column, NaN where missing; a categorical becomes its index in
    ``categories`` (a category not in the list, like a null, is missing)."""
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if pa.types.is_null(t):
        return np.nan
    if kind == "categorical":
        codes = pc.index_in(as_strings(col), value_set=categories)  # null or unseen -> null
        col = pc.cast(codes, pa.float32())
    elif kind == "temporal":
        if pa.types.is_date(t):
            col = pc.cast(pc.cast(col, pa.date32()), pa.int32())
            col = pc.cast(col, pa.float32())
        else:
            col = pc.divide(pc.cast(pc.cast(col, pa.int64()), pa.float64()), float(_DAY[t.unit]))
            col = pc.cast(col, pa.float32())
    else:
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, t)
        if pa.types.is_decimal(t):
            col = pc.cast(col, pa.float64())
        try:
            col = pc.cast(col, pa.float32(), safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise JobInputError(f"feature column {name!r}: cannot read {col.type} as a number: {exc}") from exc
    values: np.ndarray = pc.fill_null(col, np.float32(np.nan)).to_numpy(zero_copy_only=False)
    return values


def check_kinds(schema: pa.Schema, features: list[str], kinds: dict[str, str], source: str, family: str) -> None:
    """Raise when a string column became a number or a number a string since training."""
    problems = []
    for name in features:
        kind = column_kind(schema.field(name), family)
        trained = kinds[name]
        # numeric and temporal both encode to numbers, but a string column must stay a string
        if (kind == "categorical") != (trained == "categorical"):
            problems.append(f"{name!r} is {schema.field(name).type} here but was {trained} at training")
    if problems:
        raise JobInputError(f"{source}: feature types changed since training: " + "; ".join(problems))
