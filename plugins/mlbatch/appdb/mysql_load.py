"""Loading the day's TSV into a MySQL staging table: one session per source, in parallel.

A :class:`LoadSource` is a local file or named pipe (``LOAD DATA LOCAL INFILE``; see
:mod:`mlbatch.appdb.pipes`) or an S3 object (Aurora's ``LOAD DATA FROM S3``). The server parses
and inserts a LOAD DATA on one core; disjoint key ranges loaded by parallel sessions use more
of them. Every session touches only the staging table, a side table nothing reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from mlbatch.appdb import locks
from mlbatch.appdb.hook import AppDbHook
from mlbatch.appdb.mysql_sql import load_data_sql
from mlbatch.appdb.publisher import PublishError, check_count, step

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class LoadSource:
    """Where (part of) the day's TSV is: a local file or pipe (``LOAD DATA LOCAL INFILE``) or an
    S3 object (Aurora). ``key_from <= key < key_to`` (None: unbounded) are the keys it holds."""

    path: str | None = None
    s3_uri: str | None = None
    key_from: Any = None
    key_to: Any = None

    @property
    def bounded(self) -> bool:
        return (self.key_from, self.key_to) != (None, None)

    def load(self, conn: Connection, table: str) -> int:
        if self.s3_uri is not None:
            return conn.exec_driver_sql(load_data_sql(table, s3_uri=self.s3_uri)).rowcount
        return conn.exec_driver_sql(load_data_sql(table), (self.path,)).rowcount


@contextmanager
def session(db: AppDbHook) -> Iterator[Connection]:
    """An autocommit session with short lock waits (:func:`locks.short_waits`)."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Tables created before schema.py set autoincrement=False on entity_key have an
        # AUTO_INCREMENT key (and CREATE TABLE LIKE copies it): without this mode a key of 0
        # would be replaced by a generated id and clash with a real one.
        conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        locks.short_waits(conn)
        yield conn


def load_all(db: AppDbHook, conn: Connection, sources: Sequence[LoadSource], into: str, expected: int) -> int:
    """Load every source into ``into`` (in ``conn`` when there is one source, else one session
    each) and check that the server took ``expected`` rows, without a warning."""
    loaded = _load(conn, sources[0], into) if len(sources) == 1 else _load_in_sessions(db, sources, into)
    check_count(f"LOAD DATA into {into}", loaded, expected)
    return loaded


def _load(conn: Connection, source: LoadSource, into: str) -> int:
    bounds = f" keys [{source.key_from}, {source.key_to})" if source.bounded else ""
    with step(f"LOAD DATA{bounds}", into):
        loaded = source.load(conn, into)
    # LOCAL implies IGNORE: a bad value or a duplicate key becomes a warning and a skipped or
    # altered row, not an error, so the warnings are checked as well as the count.
    warnings = conn.exec_driver_sql("SHOW WARNINGS LIMIT 5").fetchall()
    if warnings:
        shown = "; ".join(f"{w[0]} {w[1]}: {w[2]}" for w in warnings)
        raise PublishError(f"LOAD DATA into {into}: {loaded:,} rows loaded with warnings: {shown}")
    return loaded


def _load_in_sessions(db: AppDbHook, sources: Sequence[LoadSource], into: str) -> int:
    futures = in_sessions(db, sources, lambda source, own: _load(own, source, into), "mlbatch-load")
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return sum(f.result() for f in futures)


def in_sessions(db: AppDbHook, items: Sequence[T], work: Callable[[T, Connection], R], name: str) -> list[Future[R]]:
    """``work(item, session)`` for every item at once, each in a session of its own
    (:func:`session`); returns each item's future, in order, once every session has ended, so the
    caller may drop what the sessions used and sees every failure, not only the first."""

    def run(item: T) -> R:
        with session(db) as own:
            return work(item, own)

    with ThreadPoolExecutor(len(items), thread_name_prefix=name) as pool:
        futures = [pool.submit(run, item) for item in items]
        wait(futures)
    return futures
