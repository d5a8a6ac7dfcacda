"""The embedded Redshift stand-in: a DuckDB file that runs Redshift SQL and unloads like UNLOAD.

:meth:`DuckDBWarehouse.unload` is the local twin of ``UNLOAD ... FORMAT AS PARQUET PARALLEL ON
MANIFEST VERBOSE``: the Redshift query is transpiled with sqlglot, its rows stream out of DuckDB
in Arrow batches, ``slices`` writer threads each write ``<prefix>NNNN_part_MM.parquet`` files,
and the manifest goes last, in Redshift's format, so a reader that sees it sees every part.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mlbatch.backends.store import ObjectStore, filesystem_for
from mlbatch.backends.warehouse import duckdb_export
from mlbatch.backends.warehouse.base import check_unload_prefix
from mlbatch.backends.warehouse.duckdb_export import ident
from mlbatch.backends.warehouse.errors import UnloadError
from mlbatch.backends.warehouse.manifest import Column, ColumnType, Entry, EntryMeta, Manifest, Schema
from mlbatch.backends.warehouse.sql import to_duckdb

log = logging.getLogger(__name__)

# Rows per batch handed to a slice: small enough that a modest result still spreads over the
# slices (20k rows -> 3 slices), while each slice gathers ROW_GROUP_ROWS before writing.
BATCH_ROWS = 8_192
ROW_GROUP_ROWS = 65_536
UNLOAD_MEMORY_LIMIT = "384MB"
_QUEUE_DEPTH = 4  # batches waiting per slice: bounds memory at slices x depth x batch

_NAMED_TYPES = {
    pa.bool_(): "boolean",
    pa.int8(): "smallint",
    pa.int16(): "smallint",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.uint8(): "smallint",
    pa.uint16(): "integer",
    pa.uint32(): "bigint",
    pa.float16(): "real",
    pa.float32(): "real",
    pa.float64(): "double precision",
    pa.string(): "character varying",
    pa.large_string(): "character varying",
    pa.date32(): "date",
    pa.time64("us"): "time without time zone",
}


# The file is the embedded "server": one process may hold it read-write, and then no other
# process may open it at all. Concurrent tasks (a backfill's runs unloading and exporting side by
# side) wait for it, as they would queue on a real warehouse, instead of failing.
LOCK_WAIT_S = 600.0


def redshift_type(arrow_type: pa.DataType) -> dict[str, Any]:
    """The manifest's ``type`` for an Arrow type, with Redshift's type names."""
    if arrow_type in _NAMED_TYPES:
        return {"base": _NAMED_TYPES[arrow_type]}
    if pa.types.is_decimal(arrow_type):
        return {"base": "numeric", "precision": arrow_type.precision, "scale": arrow_type.scale}
    if pa.types.is_timestamp(arrow_type):
        return {"base": "timestamp with time zone" if arrow_type.tz else "timestamp without time zone"}
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return {"base": "varbyte"}
    raise UnloadError(f"no Redshift type for Arrow type {arrow_type}")


@dataclass
class _Part:
    key: str
    rows: int
    size: int = 0


class _SliceWriter:
    """Writes one slice's batches to ``<prefix>SSSS_part_PP.parquet``, a new part per
    ``max_rows`` rows, one row group per ``ROW_GROUP_ROWS`` rows."""

    def __init__(self, store: ObjectStore, prefix: str, slice_no: int, schema: pa.Schema, max_rows: int):
        self.store, self.prefix, self.slice_no = store, prefix, slice_no
        self.schema, self.max_rows = schema, max_rows
        self.parts: list[_Part] = []
        self._writer: pq.ParquetWriter | None = None
        self._sink: Any = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def _open(self) -> None:
        key = f"{self.prefix}{self.slice_no:04d}_part_{len(self.parts):02d}.parquet"
        fs, path = filesystem_for(self.store.uri(key))
        if self.store.is_local:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        self._sink = fs.open_output_stream(path)
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression="snappy")
        self.parts.append(_Part(key, 0))

    def _flush(self) -> None:
        if self._pending:
            assert self._writer is not None
            self._writer.write_table(pa.Table.from_batches(self._pending, self.schema))
            self._pending, self._pending_rows = [], 0

    def _close(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._sink.close()
            fs, path = filesystem_for(self.store.uri(self.parts[-1].key))
            self.parts[-1].size = fs.get_file_info(path).size
            self._writer = self._sink = None

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._writer is None:
                self._open()
            part = self.parts[-1]
            take = min(batch.num_rows, self.max_rows - part.rows)
            self._pending.append(batch.slice(0, take))
            self._pending_rows += take
            part.rows += take
            batch = batch.slice(take)
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()
            if part.rows >= self.max_rows:
                self._close()

    def run(self, inbox: queue.Queue[pa.RecordBatch | None]) -> list[_Part]:
        try:
            while (batch := inbox.get()) is not None:
                self.write(batch)
        except BaseException:
            with contextlib.suppress(Exception):  # keep the first error, not the cleanup's
                if self._writer is not None:
                    self._writer.close()
                    self._sink.close()
            raise
        self._close()
        return self.parts


class DuckDBWarehouse:
    """A DuckDB file standing in for Redshift; connections last one call (no held file lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def from_url(cls, url: str) -> DuckDBWarehouse:
        """``duckdb://<path>`` (the value of ``MLBATCH_WAREHOUSE``; ``duckdb:///abs/path`` for an absolute one)."""
        path = url.removeprefix("duckdb://")
        if not path:
            raise ValueError(f"MLBATCH_WAREHOUSE={url!r}: expected duckdb:///path/to/warehouse.duckdb")
        return cls(Path(path))

    def _writer(self) -> duckdb.DuckDBPyConnection:
        return self._connect(read_only=False)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.path.exists():
            raise UnloadError(f"warehouse file {self.path} does not exist (build it first)")
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                log.info("warehouse file %s is locked by another process; waiting", self.path)
                time.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not security
                delay = min(delay * 2, 2.0)

    # -- mlbatch.backends.warehouse.base.Warehouse, the interface the stages use on both warehouses -----
    # DuckDB runs in this process: the "start" does the work and returns no statement id, so
    # there is nothing to wait for, defer or cancel (a killed task takes its query with it).
    def start_unload(self, query: str, store: ObjectStore, prefix: str) -> None:
        self.unload(query, store, prefix)

    def finish_unload(self, store: ObjectStore, prefix: str, statement_id: str | None) -> str:
        return store.uri(prefix + "manifest")

    def start_replace_day(self, table: str, ds: str, uris: list[str], store: ObjectStore) -> None:
        self.replace_day(table, ds, uris, store)

    def finish_replace_day(self, table: str, ds: str, statement_id: str | None) -> int:
        return self.count_day(table, ds)

    def wait(self, statement_id: str, sql: str = "") -> None:
        return None

    def cancel(self, statement_id: str) -> None:
        return None

    def is_running(self, statement_id: str) -> bool:
        return False

    def statement_seconds(self, statement_id: str) -> float | None:
        return None  # statements run in the task's process: the step times them itself

    def trigger(self, statement_id: str) -> None:
        return None

    @staticmethod
    def check_event(event: dict[str, Any] | None, what: str) -> None:
        return None

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        """Run one DuckDB statement (DDL, DML) with optional ``?`` parameters."""
        with self._connect(read_only=False) as con:
            con.execute(sql, params or [])

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a small DuckDB query (counts, checks)."""
        with self._connect(read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def replace_day(self, table: str, ds: str, uris: list[str], store: ObjectStore) -> int:
        """Replace one ``ds`` of an export table with the rows of parquet files (one transaction)."""
        return duckdb_export.replace_day(self._writer, table, ds, uris, store)

    def replace_day_stream(self, table: str, ds: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
        """Replace one ``ds`` of an export table with streamed record batches (one transaction)."""
        return duckdb_export.replace_day_stream(self._writer, table, ds, schema, batches)

    def count_day(self, table: str, ds: str) -> int:
        if not self._has_table(table):
            return 0
        rows: int = self.query(f"SELECT count(*) FROM {ident(table)} WHERE ds = ?::DATE", [ds])[0][0]
        return rows

    def latest_day(self, table: str) -> str | None:
        if not self._has_table(table):
            return None
        latest = self.query(f"SELECT max(ds) FROM {ident(table)}")[0][0]
        return latest.isoformat() if latest else None

    def _has_table(self, table: str) -> bool:
        if not self.path.exists():
            return False
        schema_name, name = table.split(".")
        return bool(
            self.query(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [schema_name, name],
            )[0][0]
        )

    def unload(
        self,
        query: str,
        store: ObjectStore,
        prefix: str,
        *,
        slices: int = 4,
        max_rows_per_file: int = 1_000_000,
    ) -> str:
        """Run ``query`` (Redshift SQL, transpiled to DuckDB's) and write its rows under ``prefix`` as
        UNLOAD would; return the manifest URI. ``prefix`` must end in ``/`` and hold nothing yet."""
        if slices < 1 or max_rows_per_file < 1:
            raise UnloadError(f"slices ({slices}) and max_rows_per_file ({max_rows_per_file}) must be >= 1")
        check_unload_prefix(store, prefix)
        sql = to_duckdb(query)
        writers: list[_SliceWriter] = []
        try:
            with self._connect(read_only=True) as con, tempfile.TemporaryDirectory(prefix="mlbatch-unload-") as spill:
                # Redshift does this work in production; here it is the worker's memory. DuckDB's
                # buffer pool defaults to 80 % of RAM and keeps what it read: the scoring unload
                # of 10M devices peaked at 1.1 GB. Capped, the query spills instead.
                con.execute(f"SET memory_limit = '{UNLOAD_MEMORY_LIMIT}'")
                con.execute(f"SET temp_directory = '{spill}'")
                reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
                schema = _redshift_schema(reader.schema, store.uri(prefix))
                writers = [_SliceWriter(store, prefix, s, schema, max_rows_per_file) for s in range(slices)]
                _distribute(_renamed(reader, schema), writers)
        except BaseException as exc:
            # No manifest was written: remove the parts so a retry finds the prefix empty.
            for key in (p.key for w in writers for p in w.parts):
                fs, path = filesystem_for(store.uri(key))
                with contextlib.suppress(OSError):
                    fs.delete_file(path)
            if isinstance(exc, duckdb.Error | pa.ArrowException):
                raise UnloadError(f"unload to {store.uri(prefix)} failed: {exc}") from exc
            raise
        parts = [p for w in writers for p in w.parts]
        manifest = Manifest(
            entries=[
                Entry(url=store.uri(p.key), meta=EntryMeta(content_length=p.size, record_count=p.rows)) for p in parts
            ],
            schema=Schema(elements=[Column(name=f.name, type=ColumnType(**redshift_type(f.type))) for f in schema]),
            meta=EntryMeta(content_length=sum(p.size for p in parts), record_count=sum(p.rows for p in parts)),
        )
        return store.put_bytes(f"{prefix}manifest", manifest.to_json().encode())


def _redshift_schema(schema: pa.Schema, where: str) -> pa.Schema:
    """Redshift folds unquoted identifiers to lower case, and its parquet columns follow."""
    names = [f.name.lower() for f in schema]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnloadError(f"unload to {where}: duplicate column names {dupes} (names are case-folded)")
    return pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)])


def _renamed(reader: pa.RecordBatchReader, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        if batch.num_rows:
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _distribute(batches: Iterator[pa.RecordBatch], writers: list[_SliceWriter]) -> None:
    """Round-robin batches to one writer thread per slice; a writer's error ends the unload."""
    inboxes: list[queue.Queue[pa.RecordBatch | None]] = [queue.Queue(_QUEUE_DEPTH) for _ in writers]
    with ThreadPoolExecutor(len(writers), thread_name_prefix="unload-slice") as pool:
        futures = [pool.submit(w.run, q) for w, q in zip(writers, inboxes, strict=True)]
        try:
            for i, batch in enumerate(batches):
                if not _put(inboxes[i % len(writers)], batch, futures[i % len(writers)]):
                    futures[i % len(writers)].result()  # the writer died: raise its error
        finally:
            for inbox, future in zip(inboxes, futures, strict=True):
                _put(inbox, None, future)  # end of data: the writer closes its last part
        for future in futures:
            future.result()


def _put(inbox: queue.Queue[pa.RecordBatch | None], item: pa.RecordBatch | None, writer: Future[list[_Part]]) -> bool:
    """Put into a bounded inbox; False when its writer has stopped (never block on a dead one)."""
    while not writer.done():
        try:
            inbox.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
