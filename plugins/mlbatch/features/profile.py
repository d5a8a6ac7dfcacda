"""Feature distributions in bounded memory, compared by :func:`mlbatch.maths.drift.psi`.

A training profile holds, per numeric feature, the cut points of ``bins`` quantile bins and the
share of rows in each bin (plus a last "null" bin). It is built in two streaming passes over an
unload: a seeded uniform sample of at most ``sample_rows`` rows fixes the cuts, then every batch
is counted into those fixed bins, so memory depends on the sample size and the batch size, never
on the row count. A scoring day is counted into the same bins in its one pass
(:class:`BinCounter`) and compared with the training shares by :mod:`mlbatch.maths.drift` (the one
PSI of the project: its floor for empty bins and its levels).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlbatch.features.reader import iter_batches, read_manifest

PROFILE_VERSION = 1


def numeric_columns(schema: pa.Schema, exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude)
    return [
        f.name
        for f in schema
        if f.name not in skip
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))
    ]


def _values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null values as float64 (booleans as 0/1)."""
    col = col.drop_null()
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


class BinCounter:
    """Per-column counts into fixed bins: ``len(cuts) + 1`` value bins, then one null bin."""

    def __init__(self, cuts: dict[str, list[float]]):
        self.cuts = {c: np.asarray(v, dtype=np.float64) for c, v in cuts.items()}
        self.counts = {c: np.zeros(len(v) + 2, dtype=np.int64) for c, v in self.cuts.items()}

    def add(self, batch: pa.RecordBatch) -> None:
        for name, cuts in self.cuts.items():
            col = batch.column(name)
            counts = self.counts[name]
            counts[-1] += col.null_count
            idx = np.searchsorted(cuts, _values(col), side="right")
            counts[:-1] += np.bincount(idx, minlength=len(cuts) + 1)

    def proportions(self, name: str) -> list[float]:
        counts = self.counts[name]
        total = int(counts.sum())
        return [float(n) / total for n in counts] if total else [0.0] * len(counts)


def build_profile(
    manifest_uri: str,
    *,
    exclude: Iterable[str] = (),
    bins: int = 10,
    sample_rows: int = 200_000,
    seed: int = 0,
    max_bytes_in_flight: int = 128 * 2**20,
    threads: int = 4,
) -> dict[str, Any]:
    """The training profile of an unload's numeric columns (two streaming passes; see module doc).

    Memory: ``threads`` reader threads each hold a compressed part and a decoded row group, plus
    ``max_bytes_in_flight`` of batches waiting (:func:`mlbatch.features.reader.iter_batches`)."""
    manifest = read_manifest(None, manifest_uri)
    rng = np.random.default_rng(seed)
    fraction = min(1.0, sample_rows / manifest.record_count) if manifest.record_count else 1.0
    samples: dict[str, list[np.ndarray]] = {}
    read: dict[str, Any] = {"max_bytes_in_flight": max_bytes_in_flight, "threads": threads}
    columns: list[str] | None = None
    # Pass 1: a uniform sample fixes the quantile cuts. The reader interleaves parts, so the
    # sample is random but not reproducible row for row; the cuts it gives are stable.
    for batch in iter_batches(manifest_uri, **read):
        if columns is None:
            columns = numeric_columns(batch.schema, exclude)
            samples = {c: [] for c in columns}
        take = pa.array(rng.random(batch.num_rows) < fraction)
        picked = batch.filter(take) if fraction < 1.0 else batch
        for c in columns:
            samples[c].append(_values(picked.column(c)))
    cuts: dict[str, list[float]] = {}
    for c in columns or []:
        values = np.concatenate(samples.pop(c)) if samples.get(c) else np.empty(0)
        qs = np.quantile(values, np.arange(1, bins) / bins) if values.size else np.empty(0)
        cuts[c] = [float(q) for q in np.unique(qs)]
    # Pass 2: every row counted into the fixed bins.
    counter = BinCounter(cuts)
    rows = 0
    for batch in iter_batches(manifest_uri, columns=list(cuts) or None, **read):
        rows += batch.num_rows
        counter.add(batch)
    return {
        "version": PROFILE_VERSION,
        "source": manifest_uri,
        "rows": rows,
        "bins": bins,
        "features": {c: {"cuts": cuts[c], "proportions": counter.proportions(c)} for c in cuts},
    }
