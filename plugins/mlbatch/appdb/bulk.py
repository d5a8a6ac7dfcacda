"""Bulk publish of a day's predictions: atomic, idempotent, backfill-safe, and costing the day's rows.

Two tables per model: ``<model>_predictions`` (the newest prediction per entity: what the
application reads by key) and ``<model>_history`` (every published day, one row per entity and
day, for "an entity's predictions by day"; kept ``publish.history_days``).

MySQL / MariaDB / Aurora (one session under a per-model named lock, plus loading sessions):

* the day arrives as MySQL-escaped TSV streamed out of the predictions parquet
  (:func:`tsv_chunk`), loaded with ``LOAD DATA LOCAL INFILE`` (or Aurora's ``LOAD DATA FROM S3``),
  possibly as several sources holding disjoint key ranges, loaded in parallel sessions into a
  staging table shaped like one partition of the history;
* ``EXCHANGE PARTITION`` makes the staging table the day's partition of the history (history is
  partitioned by day: a metadata operation, whatever the table holds);
* ONE transaction: the guarded upsert ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE col =
  IF(VALUES(ds) >= ds, ...)`` of that partition into ``<model>_predictions`` (one statement per
  key range) plus the day's ``ml_publish_log`` row. The COMMIT is when the day becomes visible.

Why this design. The copy-and-swap before it built a fresh table from the day plus every old
row the day lacked: a day of 10M rows into a table of 100M copied 90M rows, and its RENAME took
exclusive metadata locks on the tables readers read. Here every step touches the day's rows
only (B-tree lookups of the upsert grow with log(table)), the tables readers read get DML only,
and the DDL (history partitions) waits at most ``locks.LOCK_WAIT_S`` per try.

Why a crash at any point is safe. Before the transaction only the staging table and the day's
history partition have changed; the partition is exchanged back if the upsert fails, and a run
killed in between leaves a history day without its log row, which the rerun replaces. The
transaction is InnoDB's: a killed session is rolled back by the server, and its named lock is
freed, so the retry just runs. Reruns are idempotent: the partition is replaced whole, the
upsert rewrites the same values, the log row is upserted.

SQLite (embedded): the same promises in one ``BEGIN IMMEDIATE`` transaction: the history's day
deleted and inserted, the guarded upsert in batches, the log row, the expired days deleted.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateTable

from mlbatch.appdb import locks, schema
from mlbatch.appdb.hook import AppDbHook

log = logging.getLogger(__name__)

COLUMNS = ("entity_key", "ds", "model_version", "label", "score")
UPDATE = ("model_version", "label", "score", "ds")
LOCK_TIMEOUT_S = 600  # a concurrent publish of the same model (or a log swap) may take minutes
HISTORY_DAYS = 35  # days of history kept by default (spec: publish.history_days)
PAUSE_ENV = "MLBATCH_TEST_PAUSE_AT"  # tests only: sleep at a named point so a test can SIGKILL us


class PublishError(RuntimeError):
    """The app DB refused or altered the day's rows; the message names the table and the numbers."""


@contextmanager
def step(what: str, table: str) -> Iterator[None]:
    """Log how long one publish step took (the benchmark and on-call read these)."""
    started = time.perf_counter()
    yield
    log.info("%s: %s took %.2f s", table, what, time.perf_counter() - started)


def pause_point(name: str) -> None:
    """Crash-test hook: with ``MLBATCH_TEST_PAUSE_AT=<name>`` announce the point and wait to be killed."""
    if os.environ.get(PAUSE_ENV) == name:
        print(f"mlbatch: paused at {name}", file=sys.stderr, flush=True)
        time.sleep(3600)


# --- TSV in MySQL's LOAD DATA default format --------------------------------------------------
# FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' are LOAD DATA's defaults, so
# the statement leaves them out (spelling '\\' breaks under sql_mode NO_BACKSLASH_ESCAPES). In
# that format a backslash, tab, newline (and CR) inside a value are written as \\, \t, \n, \r,
# and NULL as \N; a literal "\N" text becomes "\\N" because the backslash is escaped first.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _tsv_field(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        for raw, escaped in _ESCAPES:
            arr = pc.replace_substring(arr, raw, escaped)
    else:  # numbers and dates: Arrow's text is round-trip exact ("0.1", "1e-7", "2026-11-22")
        arr = pc.cast(arr, pa.string())
    return pc.fill_null(arr, "\\N")


def tsv_chunk(columns: Sequence[pa.Array]) -> pa.Buffer:
    """The rows of equal-length arrays as LOAD DATA text, one line per row (vectorised, no Python loop)."""
    lines = pc.binary_join_element_wise(*[_tsv_field(c) for c in columns], "\t")
    lines = pc.binary_join_element_wise(lines, "", "\n")  # "row" + "\n" + "": every line ends in \n
    lines = lines.cast(pa.large_string()) if pa.types.is_string(lines.type) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    if len(offsets) < 2:
        return pa.py_buffer(b"")
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


# --- order-independent checksum ---------------------------------------------------------------
_M = np.uint64(0x9E3779B97F4A7C15)
_LANES = np.array([0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89], np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of 64-bit values (wraps by design)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


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


# --- statements -------------------------------------------------------------------------------
def q(name: str) -> str:
    """A MySQL identifier, quoted (names come from validated specs; quoting is belt and braces)."""
    return "`" + name.replace("`", "``") + "`"


def side_name(table: str, suffix: str) -> str:
    """``<table>__<suffix>`` within MySQL's 64-character limit (a hash keeps long names distinct)."""
    name = f"{table}__{suffix}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[:48]}_{digest}__{suffix}"[:64]


def load_data_sql(table: str, columns: Sequence[str] = COLUMNS, *, s3_uri: str | None = None) -> str:
    """``LOAD DATA`` of our TSV into ``table``: LOCAL (file name bound as ``%s``) or Aurora's FROM S3."""
    cols = ", ".join(q(c) for c in columns)
    if s3_uri is None:
        source = "LOCAL INFILE %s"
    else:
        if not s3_uri.startswith("s3://") or "'" in s3_uri or "\\" in s3_uri:
            raise ValueError(f"LOAD DATA FROM S3 needs a plain s3:// URI, got {s3_uri!r}")
        source = f"FROM S3 FILE '{s3_uri}'"
    return f"LOAD DATA {source} INTO TABLE {q(table)} CHARACTER SET utf8mb4 ({cols})"


def history_ddl(history: Table) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the history table, partitioned by day (LIST COLUMNS: a
    day's partition can be added in any order, so a backfill needs no reorganisation). A table
    needs one partition to exist: an empty one for a day no run has."""
    create = str(CreateTable(history).compile(dialect=mysql.dialect())).strip()
    create = create.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)
    return f"{create} PARTITION BY LIST COLUMNS({q('ds')}) (PARTITION {q(EMPTY_PARTITION)} VALUES IN ('1000-01-01'))"


EMPTY_PARTITION = "p_none"


def partition_name(day: date) -> str:
    return f"p{day:%Y%m%d}"


def add_partition_sql(history: str, day: date) -> str:
    part = q(partition_name(day))
    return f"ALTER TABLE {q(history)} ADD PARTITION (PARTITION {part} VALUES IN ('{day.isoformat()}'))"


def exchange_sql(history: str, day: date, stage: str, *, validate: bool = True) -> str:
    """Swap the staging table in as the day's partition. MySQL 8 (Aurora MySQL 3) can skip the
    check that every row belongs in the partition (a scan of the day: 1M rows took about a second
    here): every staged row has ``ds`` = the day because the TSV writer sets it. MariaDB 10.11
    always validates (``WITHOUT VALIDATION`` arrived in 11.4)."""
    sql = f"ALTER TABLE {q(history)} EXCHANGE PARTITION {q(partition_name(day))} WITH TABLE {q(stage)}"
    return sql if validate else f"{sql} WITHOUT VALIDATION"


def guarded_upsert_sql(
    table: str, source: str, *, day: bool = False, key_from: bool = False, key_to: bool = False
) -> str:
    """Upsert every row of ``source`` into ``table``; a row is replaced only by the same or a newer ds.

    ``day``: only the source's rows of ``ds = %(ds)s`` (one partition of the history);
    ``key_from`` / ``key_to``: only ``%(key_from)s <= key < %(key_to)s`` (one key range).
    ``VALUES(col)`` (not the 8.0.19 ``AS new`` alias) runs on MySQL 8.0 and MariaDB 10.11. MySQL
    applies the assignments left to right, so ``ds`` goes last: the others compare the old ds.
    """
    cols = ", ".join(q(c) for c in COLUMNS)
    t, s = q(table), q(source)
    fresh = f"VALUES({q('ds')}) >= {t}.{q('ds')}"
    sets = ", ".join(f"{t}.{q(c)} = IF({fresh}, VALUES({q(c)}), {t}.{q(c)})" for c in UPDATE)
    where = (
        ([f"{s}.{q('ds')} = %(ds)s"] if day else [])
        + ([f"{s}.{q('entity_key')} >= %(key_from)s"] if key_from else [])
        + ([f"{s}.{q('entity_key')} < %(key_to)s"] if key_to else [])
    )
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {s}{clause} ON DUPLICATE KEY UPDATE {sets}"


def log_upsert_sql(log_table: str) -> str:
    cols = [c.name for c in schema.publish_log.columns]
    values = ", ".join(f"%({c})s" for c in cols)
    sets = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in cols if c not in ("model", "ds"))
    return (
        f"INSERT INTO {q(log_table)} ({', '.join(q(c) for c in cols)}) VALUES ({values}) ON DUPLICATE KEY UPDATE {sets}"
    )


# --- MySQL ------------------------------------------------------------------------------------
F_SETPIPE_SZ = 1031  # Linux fcntl: a pipe's buffer size


@contextmanager
def piped_sources(
    writers: Sequence[Callable[[BinaryIO], None]], key_ranges: Sequence[tuple[Any, Any]] | None = None
) -> Iterator[tuple[list[LoadSource], Callable[[], None]]]:
    """LoadSources that ``LOAD DATA LOCAL INFILE`` reads while their ``writers`` still produce them.

    Each writer runs in a thread and fills a named pipe; PyMySQL streams the pipe to the server
    as it fills, so producing the TSV (reading shards, sorting, formatting) overlaps the load
    instead of preceding it. ``key_ranges`` (``(key_from, key_to)`` per writer) tell the daily
    path which keys each pipe holds, so that it can load them in parallel sessions. Yields the
    sources and ``finish``, which waits for every writer and re-raises the first error: call it
    before anything goes live (a callable log row is the place). A writer error surfaces as
    itself, not as the short load it caused.
    """
    ranges = list(key_ranges) if key_ranges is not None else [(None, None)] * len(writers)
    if len(ranges) != len(writers):
        raise ValueError(f"piped_sources: {len(writers)} writers but {len(ranges)} key ranges")
    failure: list[BaseException] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mlbatch-pipe-") as tmp:
        fifos = [os.path.join(tmp, f"day-{i}.tsv") for i in range(len(writers))]
        threads = []
        for fifo, write in zip(fifos, writers, strict=True):
            os.mkfifo(fifo, 0o600)
            threads.append(
                threading.Thread(
                    target=_fill_pipe, args=(fifo, write, stop, failure), name="mlbatch-tsv-writer", daemon=True
                )
            )
        for thread in threads:
            thread.start()

        def finish() -> None:
            for thread in threads:
                thread.join()
            if failure:
                raise failure[0]

        try:
            yield (
                [LoadSource(path=f, key_from=lo, key_to=hi) for f, (lo, hi) in zip(fifos, ranges, strict=True)],
                finish,
            )
        except BaseException as exc:
            if failure:
                raise failure[0] from exc
            raise
        finally:
            stop.set()
            for fifo, thread in zip(fifos, threads, strict=True):
                if thread.is_alive():  # the load never opened (or stopped reading) this pipe
                    with suppress(OSError):
                        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
                    thread.join(timeout=30)


def _fill_pipe(fifo: str, write: Callable[[BinaryIO], None], stop: threading.Event, failure: list) -> None:
    try:
        with open(fifo, "wb") as out:  # blocks until LOAD DATA opens the pipe
            if stop.is_set():
                return
            with suppress(OSError):  # 1 MiB instead of 64 KiB: fewer wake-ups
                fcntl.fcntl(out.fileno(), F_SETPIPE_SZ, 1 << 20)
            write(out)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller by finish()
        failure.append(exc)


@contextmanager
def piped_source(write: Callable[[BinaryIO], None]) -> Iterator[tuple[LoadSource, Callable[[], None]]]:
    """One piped LoadSource (see :func:`piped_sources`)."""
    with piped_sources([write]) as (sources, finish):
        yield sources[0], finish


@dataclass(frozen=True)
class LoadSource:
    """Where (part of) the day's TSV is: a local file or pipe (``LOAD DATA LOCAL INFILE``) or an
    S3 object (Aurora). ``key_from <= key < key_to`` (None: unbounded) are the keys it holds."""

    path: str | None = None
    s3_uri: str | None = None
    key_from: Any = None
    key_to: Any = None

    def load(self, conn: Connection, table: str) -> int:
        if self.s3_uri is not None:
            return conn.exec_driver_sql(load_data_sql(table, s3_uri=self.s3_uri)).rowcount
        return conn.exec_driver_sql(load_data_sql(table), (self.path,)).rowcount


def _check_warnings(conn: Connection, table: str, loaded: int) -> int:
    # LOCAL implies IGNORE: a bad value or a duplicate key becomes a warning and a skipped or
    # altered row, not an error, so the warnings are checked as well as the count.
    warnings = conn.exec_driver_sql("SHOW WARNINGS LIMIT 5").fetchall()
    if warnings:
        shown = "; ".join(f"{w[0]} {w[1]}: {w[2]}" for w in warnings)
        raise PublishError(f"LOAD DATA into {table}: {loaded:,} rows loaded with warnings: {shown}")
    return loaded


def _check_count(table: str, loaded: int, expected: int) -> None:
    if loaded != expected:
        raise PublishError(f"LOAD DATA into {table}: {loaded:,} rows loaded of {expected:,} written")


@contextmanager
def named_lock(conn: Connection, name: str, timeout_s: int = LOCK_TIMEOUT_S) -> Iterator[None]:
    """A MySQL named lock for this session; the server frees it if the session dies."""
    got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, timeout_s)).scalar()
    if got != 1:
        raise PublishError(f"could not take the app DB lock {name!r} within {timeout_s} s (another publish holds it)")
    try:
        yield
    finally:
        conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))


def model_lock(table: str) -> str:
    return "mlb.pub." + hashlib.sha256(table.encode()).hexdigest()[:16] if len(table) > 56 else f"mlb.pub.{table}"


def newest_ds(conn: Connection, table: str) -> Any:
    return conn.exec_driver_sql(f"SELECT MAX({q('ds')}) FROM {q(table)}").scalar()


LogRow = dict[str, Any] | Callable[[], dict[str, Any]]


def _resolve(log_row: LogRow) -> dict[str, Any]:
    """A callable log row is evaluated after the load, before anything goes live: a streaming
    writer (the benchmark's pipeline, feeding LOAD DATA through a pipe) computes the checksum
    and runs the prediction gate there, and raising drops the staging table."""
    return log_row() if callable(log_row) else log_row


def publish_mysql(
    db: AppDbHook,
    table: Table,
    source: LoadSource | Sequence[LoadSource],
    rows: int,
    log_row: LogRow,
    day: Any = None,
    *,
    history_days: int = HISTORY_DAYS,
) -> str:
    """Publish the day in ``source`` into ``table`` (and its history) with its log row; return
    ``daily`` (no newer day exists) or ``backfill``: the same steps, named for the log.

    1. the day is loaded into a staging table ``<model>_history__stage`` shaped like one
       partition of ``<model>_history`` (a session per source, in parallel: disjoint key ranges);
    2. ``EXCHANGE PARTITION`` swaps it in as the day's partition of the history (metadata only);
    3. ONE transaction upserts that partition into ``table`` (guarded: a row is replaced only by
       the same or a newer day), one statement per key range, and writes the log row;
    4. history partitions older than ``history_days`` before the newest day are dropped.

    Every step costs the day's rows (or nothing), whatever the table holds. Readers of
    ``table`` see the old rows until the COMMIT and all of the day after it; the table is never
    the target of DDL, so point lookups never queue on a metadata lock. Each DDL waits at most
    :data:`locks.LOCK_WAIT_S` and is retried; a step still blocked raises
    :class:`locks.LockWaitError` naming the blocker, with ``table`` and the log unchanged.
    """
    sources = [source] if isinstance(source, LoadSource) else list(source)
    name = table.name
    if day is None:
        if callable(log_row):
            raise TypeError("publish_mysql: pass day= when log_row is evaluated after the load")
        day = log_row["ds"]
    history = schema.history_for(table).name
    stage = side_name(history, "stage")
    with _session(db) as conn:
        with named_lock(conn, model_lock(name)):
            own = {locks.session_id(conn)}
            validate = "mariadb" in str(conn.exec_driver_sql("SELECT VERSION()").scalar()).lower()

            def ddl(what: str, sql: str) -> None:
                with step(what, name):
                    locks.retrying(conn, f"{name}: {what}", lambda: conn.exec_driver_sql(sql), own_sessions=own)

            ddl("history table", history_ddl(schema.history_for(table)))
            # Leftovers of a killed run (and of the copy-and-swap design before this one) are
            # dropped; nothing reads them.
            leftovers = [stage] + [side_name(name, side) for side in ("new", "old", "stage")]
            ddl("drop leftovers", "DROP TABLE IF EXISTS " + ", ".join(q(t) for t in leftovers))
            newest = newest_ds(conn, name)  # stable: every writer of the table holds the model lock
            path = "daily" if newest is None or newest <= day else "backfill"
            ddl("staging table", f"CREATE TABLE {q(stage)} LIKE {q(history)}")
            ddl("staging table unpartitioned", f"ALTER TABLE {q(stage)} REMOVE PARTITIONING")
            exchanged = False
            try:
                _check_count(stage, _load_in_sessions(db, conn, sources, stage), rows)
                pause_point("loaded")
                row = _resolve(log_row)
                if not _has_partition(conn, history, partition_name(day)):
                    ddl(f"add partition {partition_name(day)}", add_partition_sql(history, day))
                ddl(f"exchange partition {partition_name(day)}", exchange_sql(history, day, stage, validate=validate))
                exchanged = True
                pause_point("exchanged")
                locks.retrying(
                    conn,
                    f"{name}: upsert of {day}",
                    lambda: _upsert_day(conn, name, history, day, sources, row),
                    own_sessions=own,
                )
                exchanged = False  # committed: the history's partition is the published day
            finally:
                if exchanged:  # the upsert failed: the stage holds the partition's former rows
                    with suppress(Exception):
                        conn.exec_driver_sql(exchange_sql(history, day, stage, validate=validate))
                with suppress(Exception):  # a dead session leaves it to the next run, which drops it first
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(stage)}")
            _expire_history(conn, history, max(day, newest) if newest else day, history_days, own)
            return path


def _upsert_day(conn: Connection, name: str, history: str, day: Any, sources: list[LoadSource], row: dict) -> None:
    """The day's partition into ``name`` and the log row, in one transaction (batched by key range:
    each statement's progress is logged; the transaction is what makes the day visible at once)."""
    ranges = [(s.key_from, s.key_to) for s in sources] if len(sources) > 1 else [(None, None)]
    conn.exec_driver_sql("START TRANSACTION")
    try:
        for lo, hi in ranges:
            bounds = f" keys [{lo}, {hi})" if (lo, hi) != (None, None) else ""
            with step(f"guarded upsert{bounds}", name):
                sql = guarded_upsert_sql(name, history, day=True, key_from=lo is not None, key_to=hi is not None)
                conn.exec_driver_sql(sql, {"ds": day, "key_from": lo, "key_to": hi})
        conn.exec_driver_sql(log_upsert_sql(schema.publish_log.name), row)
        pause_point("in_transaction")
        conn.exec_driver_sql("COMMIT")
    except BaseException:
        with suppress(Exception):  # a dead session is rolled back by the server anyway
            conn.exec_driver_sql("ROLLBACK")
        raise


def _has_partition(conn: Connection, table: str, partition: str) -> bool:
    return bool(
        conn.exec_driver_sql(
            "SELECT COUNT(*) FROM information_schema.PARTITIONS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND PARTITION_NAME = %s",
            (table, partition),
        ).scalar()
    )


def expired_partitions(names: Iterable[str], newest: date, history_days: int) -> list[str]:
    """The day partitions older than ``history_days`` days before ``newest`` (kept: newest and
    the ``history_days - 1`` days before it)."""
    cutoff = partition_name(newest - timedelta(days=history_days - 1))
    return sorted(n for n in names if n != EMPTY_PARTITION and len(n) == 9 and n < cutoff)


def _expire_history(conn: Connection, history: str, newest: date, history_days: int, own: set[int]) -> None:
    """Drop the expired days' partitions (metadata only). The day is already published: a
    blocked drop is logged and left to the next run, not a failed task."""
    names = [
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT PARTITION_NAME FROM information_schema.PARTITIONS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (history,),
        )
    ]
    expired = expired_partitions(names, newest, history_days)
    if not expired:
        return
    sql = f"ALTER TABLE {q(history)} DROP PARTITION " + ", ".join(q(p) for p in expired)
    try:
        with step(f"drop {len(expired)} expired history partitions", history):
            locks.retrying(conn, f"{history}: expire", lambda: conn.exec_driver_sql(sql), own_sessions=own)
    except locks.LockWaitError as exc:
        log.warning("%s", exc)


@contextmanager
def _session(db: AppDbHook) -> Iterator[Connection]:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Tables created before schema.py set autoincrement=False on entity_key have an
        # AUTO_INCREMENT key (and CREATE TABLE LIKE copies it): without this mode a key of 0
        # would be replaced by a generated id and clash with a real one.
        conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        locks.short_waits(conn)
        yield conn


def _load_range(conn: Connection, source: LoadSource, into: str) -> int:
    bounds = f"keys [{source.key_from}, {source.key_to})" if (source.key_from, source.key_to) != (None, None) else ""
    with step(f"LOAD DATA {bounds}".rstrip(), into):
        return _check_warnings(conn, into, source.load(conn, into))


def _load_in_sessions(db: AppDbHook, conn: Connection, sources: list[LoadSource], into: str) -> int:
    """Load every source into ``into``: in ``conn`` when there is one, else one session each.

    The server parses and inserts a LOAD DATA on one core; disjoint key ranges loaded by
    parallel sessions use more of them. Every session touches only ``into``, a side table
    nothing reads.
    """
    if len(sources) == 1:
        return _load_range(conn, sources[0], into)

    def run(source: LoadSource) -> int:
        with _session(db) as own:
            return _load_range(own, source, into)

    with ThreadPoolExecutor(len(sources), thread_name_prefix="mlbatch-load") as pool:
        futures = [pool.submit(run, s) for s in sources]
        wait(futures)  # every session ends before the caller may drop the table
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return sum(f.result() for f in futures)


# --- SQLite -----------------------------------------------------------------------------------
def publish_sqlite(
    db: AppDbHook,
    table: Table,
    row_batches: Iterable[list[dict[str, Any]]],
    log_row: Callable[[], dict[str, Any]],
    day: date,
    *,
    history_days: int = HISTORY_DAYS,
) -> str:
    """The day into the history and (guarded upsert) the latest table, the expired history
    days deleted, and the log row: one transaction (SQLite has one writer)."""
    from sqlalchemy import delete, func, insert, select

    history = schema.history_for(table)
    history.create(db.engine, checkfirst=True)
    with db.begin() as conn:
        conn.execute(delete(history).where(history.c.ds == day))
        for rows in row_batches:
            if rows:
                conn.execute(insert(history), rows)
            db.upsert(conn, table, rows, update=list(UPDATE), newer_than="ds")
        row = log_row()
        db.upsert(conn, schema.publish_log, [row], update=[c for c in row if c not in ("model", "ds")])
        newest = conn.execute(select(func.max(history.c.ds))).scalar() or day
        newest = date.fromisoformat(newest) if isinstance(newest, str) else newest
        conn.execute(delete(history).where(history.c.ds <= newest - timedelta(days=history_days)))
        pause_point("in_transaction")
    return "upsert"
