"""Read an unload through its manifest: parts in parallel, memory bounded, counts checked.

Works the same on an UNLOAD by Redshift (``s3://``) and by the embedded warehouse (``file://``):
only the manifest says which files exist. Batches from different parts interleave. Every part
must hold exactly its ``record_count`` rows and the manifest's columns, in order, or
:class:`ManifestMismatch` names the file and the numbers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlbatch.backends.store import ObjectStore, filesystem_for, read_object
from mlbatch.backends.warehouse.manifest import UNLOAD_MAX_FILE_MB, Entry, Manifest
from mlbatch.errors import UsageError

# Redshift type names -> Arrow, only to give an unload with no parts a typed, empty table.
_ARROW_TYPES = {
    "boolean": pa.bool_(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}


class ManifestMismatch(UsageError, ValueError):
    """A part disagrees with its manifest (row count or columns); the message names the file."""


def read_manifest(store: ObjectStore | None, manifest_uri: str) -> Manifest:
    """Load and check a manifest; errors name its URI."""
    if store is not None:
        store.key(manifest_uri)  # raises when the URI is outside the store
    fs, path = filesystem_for(manifest_uri)
    try:
        with fs.open_input_stream(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {manifest_uri} does not exist") from None
    except OSError as exc:
        raise OSError(f"cannot read manifest {manifest_uri}: {exc}") from exc
    return Manifest.parse(text, source=manifest_uri)


# Parts up to this size are fetched whole, in one GET: every part of an UNLOAD with the default
# MAXFILESIZE (features.manifest.UNLOAD_MAX_FILE_MB) qualifies.
WHOLE_PART_BYTES = UNLOAD_MAX_FILE_MB * 2**20

_DONE = object()  # a worker has no more files


class _Budget:
    """Bytes of batches queued but not yet taken; producers wait while it is over the limit."""

    def __init__(self, limit: int, stop: threading.Event):
        self.limit, self.stop, self.used = limit, stop, 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> bool:
        with self._cond:
            # An oversized batch still passes when nothing else is queued (else: deadlock).
            while self.used and self.used + n > self.limit:
                if self.stop.is_set():
                    return False
                self._cond.wait(0.1)
            self.used += n
            return not self.stop.is_set()

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


def _read_entry(
    entry: Entry,
    manifest: Manifest,
    manifest_uri: str,
    columns: list[str] | None,
    batch_rows: int,
    whole_part_bytes: int,
    out: queue.Queue[Any],
    budget: _Budget,
) -> None:
    url, expected = entry.url, entry.meta.record_count
    fs, path = filesystem_for(url)
    try:
        f = fs.open_input_file(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{url} (listed in {manifest_uri}) does not exist: {exc}") from None
    except OSError as exc:
        raise OSError(f"cannot read {url} (listed in {manifest_uri}): {exc}") from exc
    with f:
        size = f.size()
        if size <= whole_part_bytes:
            # A part of at most MAXFILESIZE comes in one GET: no footer request, no ranged GET per
            # row group. Requests are what cost on S3 (latency, price) and on moto's server (every
            # GET, even of 1 KiB, copies the whole object: 35 ms for a 57 MB part). What is held
            # is this one compressed part per worker, whatever the row count.
            pf = pq.ParquetFile(pa.BufferReader(read_object(url, size)))
        else:
            # A bigger part: one row group at a time, pre-buffered, so that its column chunks
            # arrive in a few coalesced range requests and what is held is one row group per
            # worker, never a whole file (pre-buffering a whole file is what made pyarrow's
            # default hold 6.4 GB at 10M rows).
            pf = pq.ParquetFile(f, pre_buffer=True)
        names = pf.schema_arrow.names
        if names != manifest.columns:
            raise ManifestMismatch(
                f"{url}: columns {names} differ from the manifest's {manifest.columns} ({manifest_uri})"
            )
        if pf.metadata.num_rows != expected:
            raise ManifestMismatch(
                f"{url}: holds {pf.metadata.num_rows} rows but {manifest_uri} says record_count={expected}"
            )
        rows = 0
        for group in range(pf.num_row_groups):
            # A whole row group per call, then zero-copy slices: pyarrow's batch-sized reader
            # (iter_batches) costs 25-40 % more CPU for the same decode.
            table = pf.read_row_group(group, columns=columns)
            for batch in table.to_batches(max_chunksize=batch_rows):
                rows += batch.num_rows
                if not budget.acquire(batch.nbytes):
                    return
                out.put((batch, batch.nbytes))
            del table
        if rows != expected:
            raise ManifestMismatch(f"{url}: read {rows} rows but {manifest_uri} says record_count={expected}")


def iter_batches(
    manifest_uri: str,
    *,
    columns: list[str] | None = None,
    expected_columns: list[str] | None = None,
    max_bytes_in_flight: int = 256 * 2**20,
    threads: int = 4,
    batch_rows: int = 65_536,
    whole_part_bytes: int = WHOLE_PART_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Record batches of every part listed in the manifest, read by ``threads`` workers.

    Memory: at most about ``max_bytes_in_flight`` bytes of batches wait in the queue, plus the
    batch the caller holds, plus per worker one decoded row group and the compressed bytes of
    one part of at most ``whole_part_bytes`` (fetched in one GET) or of one row group of a bigger
    part. None of it grows with the row count. ``expected_columns`` (what the spec or the model
    expects, in order) is checked against the manifest before any part is read. A worker's
    error is raised here and stops the others; closing the generator early stops them too.
    """
    manifest = read_manifest(None, manifest_uri)
    _check_columns(manifest, manifest_uri, columns, expected_columns)
    if not manifest.entries:
        return
    entries: queue.SimpleQueue[Entry] = queue.SimpleQueue()
    for entry in manifest.entries:
        entries.put(entry)
    n_workers = max(1, min(threads, len(manifest.entries)))
    out: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    budget = _Budget(max_bytes_in_flight, stop)

    def work() -> None:
        try:
            while not stop.is_set():
                try:
                    entry = entries.get_nowait()
                except queue.Empty:
                    break
                _read_entry(entry, manifest, manifest_uri, columns, batch_rows, whole_part_bytes, out, budget)
        except BaseException as exc:
            stop.set()
            out.put(exc)
        finally:
            out.put(_DONE)

    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="manifest-reader")
    try:
        for _ in range(n_workers):
            pool.submit(work)
        yield from _drain(out, n_workers, budget)
    finally:
        stop.set()  # workers blocked on the budget or between files return promptly
        pool.shutdown(wait=False, cancel_futures=True)


def _drain(out: queue.Queue[Any], n_workers: int, budget: _Budget) -> Iterator[pa.RecordBatch]:
    """The workers' batches as they come, until every worker is done; a worker's error is raised."""
    done = 0
    while done < n_workers:
        item = out.get()
        if item is _DONE:
            done += 1
        elif isinstance(item, BaseException):
            raise item
        else:
            batch, nbytes = item
            budget.release(nbytes)
            yield batch


def _check_columns(
    manifest: Manifest, manifest_uri: str, columns: list[str] | None, expected_columns: list[str] | None
) -> None:
    """Before any part is read: the unload has exactly the expected columns, and the asked ones."""
    if expected_columns is not None and manifest.columns != list(expected_columns):
        missing = [c for c in expected_columns if c not in manifest.columns]
        extra = [c for c in manifest.columns if c not in expected_columns]
        raise ManifestMismatch(
            f"{manifest_uri}: columns {manifest.columns} are not the expected {list(expected_columns)} "
            f"(missing {missing}, unexpected {extra})"
        )
    if columns is not None:
        missing = [c for c in columns if c not in manifest.columns]
        if missing:
            raise KeyError(f"columns {missing} are not in {manifest_uri} (it has {manifest.columns})")


def read_table(manifest_uri: str, columns: list[str] | None = None) -> pa.Table:
    """The whole unload as one table (for small data: tests, checks, the demo)."""
    batches = list(iter_batches(manifest_uri, columns=columns))
    if batches:
        return pa.Table.from_batches(batches)
    manifest = read_manifest(None, manifest_uri)
    fields = [
        pa.field(c.name, _ARROW_TYPES.get(c.type.base, pa.string()))
        for c in manifest.schema_.elements
        if columns is None or c.name in columns
    ]
    if columns is not None:
        fields.sort(key=lambda f: columns.index(f.name))
    return pa.schema(fields).empty_table()
