"""An order-independent checksum of the day's rows: what ``ml_publish_log`` records and the export gate compares."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_M = np.uint64(0x9E3779B97F4A7C15)
_LANES = np.array([0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89], np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of 64-bit values (wraps by design)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        mixed: np.ndarray = x ^ (x >> np.uint64(31))  # numpy types the shifted array's ^ as Any
        return mixed


def _string_hash(arr: pa.Array) -> np.ndarray:
    """A 64-bit hash per string (polynomial over its UTF-8 bytes, then mixed), vectorised with numpy."""
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = arr.buffers()[2]
    lengths = np.diff(offsets).astype(np.uint64)
    out = np.zeros(n, np.uint64)
    total = int(offsets[-1] - offsets[0]) if n else 0
    if total:
        raw = np.frombuffer(data, np.uint8, count=total, offset=int(offsets[0])).astype(np.uint64)
        starts = offsets[:-1] - offsets[0]
        pos = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths.astype(np.int64))
        powers = np.cumprod(np.full(int(lengths.max()), _M, np.uint64), dtype=np.uint64)
        with np.errstate(over="ignore"):
            terms = (raw + np.uint64(1)) * powers[pos]
        nonempty = lengths > 0
        out[nonempty] = np.add.reduceat(terms, starts[nonempty])
    if arr.null_count:
        out[np.asarray(arr.is_null())] = np.uint64(0xDEADBEEFCAFEF00D)
    return _mix(out ^ lengths)


def _value_hash(arr: pa.Array) -> np.ndarray:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return _string_hash(arr)
    if pa.types.is_floating(arr.type):
        bits = np.asarray(pc.fill_null(arr.cast(pa.float64()), 0.0)).view(np.uint64)
    else:
        bits = np.asarray(pc.fill_null(arr.cast(pa.int64()), 0)).view(np.uint64)
    return _mix(bits ^ np.uint64(arr.type.bit_width or 0))


class RowChecksum:
    """An order-independent fingerprint of rows, updated batch by batch (nothing held but 4 sums).

    Each row is hashed to 64 bits from its columns; four independently seeded lanes of those
    hashes are summed modulo 2**64 (a multiset hash: row order and batch boundaries do not
    matter, a changed, missing or extra row does). Not cryptographic: it detects accidents.
    """

    def __init__(self, columns: Sequence[str] = ("entity_key", "label", "score")):
        self.columns = list(columns)
        self.rows = 0
        self._sums = np.zeros(len(_LANES), np.uint64)

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.num_rows:
            return
        h = np.zeros(batch.num_rows, np.uint64)
        with np.errstate(over="ignore"):
            for i, name in enumerate(self.columns):
                col = batch.column(name)
                col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
                h = _mix(h * _M + _value_hash(col) + np.uint64(i))
            for lane, seed in enumerate(_LANES):
                self._sums[lane] += np.sum(_mix(h ^ seed), dtype=np.uint64)
        self.rows += batch.num_rows

    def merge(self, other: RowChecksum) -> None:
        """Add the rows another checksum saw (the sums are a multiset hash: parts add up)."""
        if other.columns != self.columns:
            raise ValueError(f"cannot merge checksums of columns {other.columns} into {self.columns}")
        with np.errstate(over="ignore"):
            self._sums += other._sums
        self.rows += other.rows

    def hexdigest(self) -> str:
        text = f"{self.rows}:" + ":".join(str(int(s)) for s in self._sums)
        return hashlib.sha256(text.encode()).hexdigest()
