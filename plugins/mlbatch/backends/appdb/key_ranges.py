"""A day's rows in key order, as key ranges that parallel load sessions stream, in bounded memory.

InnoDB loads rows fastest in primary-key order, and several sessions load faster than one, so
the publish path wants the day sorted and cut into disjoint key ranges. Written here because
the obvious tool does not hold its memory: DuckDB's ORDER BY (2.0) spills its rows but
allocates per-row structures in memory, and two 15M-row sorts failed under a 384 MB limit.

The external sort, in three steps:

1. :func:`split_keys`: a uniform sample of the keys (at most ``SAMPLE_KEYS``) gives the split
   keys of ``pieces`` ranges of about equal size;
2. :func:`spill_by_range`: one pass over the day writes every batch's rows to their range's
   Arrow IPC file in a temporary folder (nothing held but the batch);
3. :meth:`Session.batches`: a session reads its ranges one after another, sorts each in memory
   (at most about ``rows / pieces`` rows) and yields it in slices.

Memory is bounded by the piece size times the sessions running at once, whatever the day's size.
:func:`sorted_ranges` runs the three for a publisher's :class:`~mlbatch.backends.appdb.publisher.Day`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlbatch.backends.appdb.publisher import BATCH_ROWS, READ, Day, step
from mlbatch.maths.key_sample import cut_points, sample_keys

PIECE_ROWS = 500_000  # rows sorted in memory at once per session (about 25-50 MB, twice while sorting)


def piece_count(rows: int, sessions: int, piece_rows: int = PIECE_ROWS) -> int:
    """Ranges to cut ``rows`` into: at least one per session, at most ``piece_rows`` rows each."""
    sessions = max(1, sessions)
    pieces = max(sessions, math.ceil(rows / max(1, piece_rows)))
    return math.ceil(pieces / sessions) * sessions


def split_keys(keys: Iterable[pa.Array], rows: int, pieces: int) -> list[Any]:
    """``pieces - 1`` increasing keys that cut the key set into ranges of about equal size.

    ``keys`` is one pass over every key (``rows`` of them); each is kept with probability
    ``SAMPLE_KEYS / rows``, so what is held is the sample, not the keys.
    """
    if pieces <= 1 or rows <= 0:
        return []
    return cut_points(sample_keys(keys, rows), pieces)


def range_of(keys: pa.Array, splits: list[Any]) -> np.ndarray:
    """The range number of every key: range i holds ``splits[i-1] <= key < splits[i]``."""
    if not splits:
        return np.zeros(len(keys), np.int64)
    if pa.types.is_integer(keys.type):
        numbers: np.ndarray = np.searchsorted(np.asarray(splits, np.int64), keys.to_numpy(), side="right")
        return numbers
    # Strings: numpy compares Python str by code point, which is UTF-8 byte order, Arrow's order.
    return np.searchsorted(np.asarray(splits, dtype=object), np.asarray(keys.to_pylist(), dtype=object), side="right")


@dataclass
class Session:
    """One load session's share of the spilled day: its range ``files`` in key order, holding
    the keys in ``[key_from, key_to)`` (None: unbounded)."""

    key_from: Any
    key_to: Any
    files: list[Path]
    key: str
    batch_rows: int

    def batches(self) -> Iterator[pa.RecordBatch]:
        for path in self.files:
            if not path.exists():  # no key of the day fell into this range
                continue
            with pa.memory_map(str(path)) as source:
                piece = pa.ipc.open_stream(source).read_all()
            ordered = piece.sort_by(self.key)
            del piece
            yield from ordered.to_batches(max_chunksize=self.batch_rows)


def spill_by_range(
    batches: Iterable[pa.RecordBatch],
    splits: list[Any],
    sessions: int,
    folder: Path,
    *,
    key: str = "entity_key",
    batch_rows: int = 65_536,
) -> list[Session]:
    """Write every row to its range's file under ``folder``; return the sessions' shares in key order."""
    pieces = len(splits) + 1
    sessions = max(1, min(sessions, pieces))
    files = [folder / f"range-{i:05d}.arrows" for i in range(pieces)]
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            ranges = range_of(batch.column(key), splits)
            order = np.argsort(ranges, kind="stable")
            grouped = batch.take(pa.array(order))
            counts = np.bincount(ranges, minlength=pieces)
            start = 0
            for piece in np.flatnonzero(counts).tolist():  # as Python ints, the writers' keys
                if piece not in writers:
                    writers[piece] = pa.ipc.new_stream(str(files[piece]), batch.schema)
                writers[piece].write_batch(grouped.slice(start, int(counts[piece])))
                start += int(counts[piece])
    finally:
        for writer in writers.values():
            writer.close()
    bounds = [None, *splits, None]
    per = math.ceil(pieces / sessions)
    shares = []
    for s in range(sessions):
        lo, hi = s * per, min(pieces, (s + 1) * per)
        if lo < hi:
            shares.append(Session(bounds[lo], bounds[hi], files[lo:hi], key, batch_rows))
    return shares


@contextmanager
def sorted_ranges(day: Day, sessions: int) -> Iterator[list[Session]]:
    """The day in key order, cut into ``sessions`` key ranges (:mod:`mlbatch.backends.appdb.key_ranges`).

    The prediction gate's key sample (else one pass over the keys) gives the split keys; a pass
    over the rows spills each row to its range in a temporary folder; each session then sorts its ranges one at a time.
    InnoDB appends rows that arrive in primary-key order to the end of its B-tree; in the
    scrambled order the score jobs write, every row lands on a random page (about 2x slower to
    load at 1M rows here). The ordered staging table also makes the upsert's lookups sequential.
    """
    pieces = piece_count(day.rows, sessions)
    with tempfile.TemporaryDirectory(prefix="mlbatch-ranges-") as spill:
        with step(f"split into {pieces} key ranges", day.table.name):
            sample = day.key_sample()  # the prediction gate's, drawn in its pass over the day
            if sample is None:  # none kept (a run gated by an older mlbatch, a test's Day): one pass
                splits = split_keys((b.column("entity_key") for b in day.read(["entity_key"])), day.rows, pieces)
            else:
                splits = cut_points(sample, pieces)
            shares = spill_by_range(day.read(READ), splits, sessions, Path(spill), batch_rows=BATCH_ROWS)
        yield shares
