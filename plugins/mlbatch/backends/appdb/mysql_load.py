"""Loading the day's TSV into a MySQL staging table: one session per source, in parallel.

A :class:`LoadSource` is a local file or named pipe (``LOAD DATA LOCAL INFILE``; see
:mod:`mlbatch.backends.appdb.pipes`) or an S3 object (Aurora's ``LOAD DATA FROM S3``). The server parses
and inserts a LOAD DATA on one core; disjoint key ranges loaded by parallel sessions use more
of them. Every session touches only the staging table, a side table nothing reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from mlbatch.backends.appdb import locks
from mlbatch.backends.appdb.connection import LOAD_ROLE_ENV
from mlbatch.backends.appdb.mysql_sessions import PublishSessions
from mlbatch.backends.appdb.mysql_sql import load_data_sql, q
from mlbatch.backends.appdb.publisher import PublishError, check_count, step

# Access denied: Aurora answers 1227 (ER_SPECIFIC_ACCESS_DENIED_ERROR) when the load privilege
# is not active; 1045 and 1142 are the other refusals a load may meet.
ACCESS_DENIED = {1045, 1142, 1227}

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


def load_all(
    sessions: PublishSessions, conn: Connection, sources: Sequence[LoadSource], into: str, expected: int
) -> int:
    """Load every source into ``into`` (in ``conn`` when there is one source, else one session
    each) and check that the server took ``expected`` rows, without a warning."""
    role = sessions.load_role
    if len(sources) == 1:
        loaded = _load(conn, sources[0], into, role)
    else:
        loaded = _load_in_sessions(sessions, sources, into)
    check_count(f"LOAD DATA into {into}", loaded, expected)
    return loaded


def _load(conn: Connection, source: LoadSource, into: str, role: str | None = None) -> int:
    bounds = f" keys [{source.key_from}, {source.key_to})" if source.bounded else ""
    with step(f"LOAD DATA{bounds}", into):
        loaded = source.load(conn, into) if source.s3_uri is None else _load_from_s3(conn, source, into, role)
    # LOCAL implies IGNORE: a bad value or a duplicate key becomes a warning and a skipped or
    # altered row, not an error, so the warnings are checked as well as the count.
    warnings = conn.exec_driver_sql("SHOW WARNINGS LIMIT 5").fetchall()
    if warnings:
        shown = "; ".join(f"{w[0]} {w[1]}: {w[2]}" for w in warnings)
        raise PublishError(f"LOAD DATA into {into}: {loaded:,} rows loaded with warnings: {shown}")
    return loaded


def _load_from_s3(conn: Connection, source: LoadSource, into: str, role: str | None) -> int:
    """Aurora's LOAD DATA FROM S3, after ``SET ROLE <role>``: Aurora MySQL 3 grants the load
    (AWS_LOAD_S3_ACCESS) through a role that a session does not have active by default."""
    if role:
        conn.exec_driver_sql(f"SET ROLE {q(role)}")
    try:
        return source.load(conn, into)
    except DBAPIError as exc:
        if locks.error_code(exc) not in ACCESS_DENIED:
            raise
        if role:
            fix = f"the session ran SET ROLE {q(role)}: grant that role the load privilege (AWS_LOAD_S3_ACCESS)"
        else:
            fix = (
                "Aurora MySQL 3 grants the load privilege through a role (AWS_LOAD_S3_ACCESS) that a session "
                f"does not have active by default: set the app DB connection's extra aurora_load_role (or "
                f"{LOAD_ROLE_ENV}) to that role so that each load session runs SET ROLE first, or set the "
                "cluster parameter activate_all_roles_on_login=1"
            )
        raise PublishError(f"LOAD DATA FROM S3 into {into} refused ({exc.orig}); {fix}") from exc


def _load_in_sessions(sessions: PublishSessions, sources: Sequence[LoadSource], into: str) -> int:
    role = sessions.load_role
    futures = in_sessions(sessions, sources, lambda source, own: _load(own, source, into, role), "mlbatch-load")
    errors = [exc for f in futures if (exc := f.exception()) is not None]
    if errors:
        raise errors[0]
    return sum(f.result() for f in futures)


def in_sessions(
    sessions: PublishSessions, items: Sequence[T], work: Callable[[T, Connection], R], name: str
) -> list[Future[R]]:
    """``work(item, session)`` for every item at once, each in a session of its own
    (:meth:`PublishSessions.open`); returns each item's future, in order, once every session has
    ended, so the caller may drop what the sessions used and sees every failure, not only the first.
    Interrupted while waiting (``execution_timeout``'s exception, a signal), it stops the publish's
    sessions first: leaving the pool waits for its threads, which would load on to the end."""

    def run(item: T) -> R:
        with sessions.open() as own:
            return work(item, own)

    with ThreadPoolExecutor(len(items), thread_name_prefix=name) as pool:
        futures = [pool.submit(run, item) for item in items]
        try:
            wait(futures)
        except BaseException:
            sessions.stop(why="interrupted")
            raise
    return futures
