"""One interface for publishing a day into the app DB; one implementation per backend.

A :class:`Publisher` takes a :class:`Day` (the day's prediction batches as a stream, the count
its shards hold, the run that made them) and keeps the same promises on every backend:

* the day's rows are loaded, their count checked against what the shards hold, and their
  order-independent checksum (:class:`~mlbatch.backends.appdb.checksum.RowChecksum`) taken from the
  stream as it is loaded;
* the day becomes visible at once: ``<model>_predictions`` and the day's ``ml_publish_log``
  row (count, checksum, run: what the export gate reconciles the warehouse against) change in
  one transaction, and an entity's row is replaced only by a day the same or newer (with MySQL's
  ``publish.mode: partitioned`` the day's history partition is exchanged in at once instead,
  readers take each entity's newest day, and the log row follows the exchange);
* ``<model>_history`` holds the day (kept ``history_days``);
* a rerun gives the same tables, and a killed publish leaves nothing half-written;
* :meth:`Publisher.stop` (the task's ``on_kill``) ends a running publish's work in the database.

Implementations: :class:`~mlbatch.backends.appdb.mysql_publish.MySqlPublisher` (Aurora MySQL,
MariaDB), :class:`~mlbatch.backends.appdb.postgres_publish.PostgresPublisher` (Aurora PostgreSQL,
PostgreSQL) and :class:`~mlbatch.backends.appdb.sqlite_publish.SqlitePublisher` (the embedded stack).
The app DB URL's backend (:mod:`~mlbatch.backends.appdb.backends`) picks one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

import pyarrow as pa
from sqlalchemy import Connection, Engine, Table

from mlbatch.backends.appdb.checksum import RowChecksum
from mlbatch.errors import StageFailed

log = logging.getLogger(__name__)

HISTORY_DAYS = 35  # days of history kept by default (spec: publish.history_days)
READ = ["entity_key", "label", "score", "model_version"]  # the columns a publisher reads
BATCH_ROWS = 65_536  # rows per batch read from the shards
COLUMNS = ("entity_key", "ds", "model_version", "label", "score")  # of <model>_predictions and _history
UPDATE = ("model_version", "label", "score", "ds")  # what a newer day replaces; ds last: MySQL
# applies assignments left to right, so the others still compare against the old ds


class PublishError(StageFailed, RuntimeError):
    """The app DB refused or altered the day's rows; the message names the table and the numbers."""


class PublishStopped(PublishError):
    """The publish was stopped from outside (its task's ``on_kill``): nothing was committed after."""


@dataclass(frozen=True)
class Day:
    """A day to publish. ``read(columns)`` streams the day's prediction batches (only those
    columns; a publisher may read the day more than once, e.g. the keys first to cut key
    ranges), and raises if a batch does not belong to ``model_version``."""

    model: str
    table: Table  # <model>_predictions (schema.predictions_table)
    key_type: str  # the spec's entity.type: "integer" or "string"
    ds: date
    model_version: str
    run_id: str
    run_key: str  # the run as a path segment (RunContext.run_key), for scratch objects
    rows: int  # what the shards hold (their parquet footers): the count the load must report
    read: Callable[[Sequence[str]], Iterator[pa.RecordBatch]]
    history_days: int = HISTORY_DAYS
    sessions: int = 0  # parallel load sessions (spec: publish.sessions); 0: the publisher's default
    key_sample: Callable[[], pa.Array | None] = lambda: None  # a uniform sample of the day's keys, if kept
    commit: str = "day"  # spec: publish.commit: "day" (one transaction) or "key_range" (one per range)
    mode: str = "upsert"  # spec: publish.mode: "upsert" (<model>_predictions) or "partitioned" (history + base)

    def log_row(self, checksum: RowChecksum) -> dict[str, Any]:
        """The day's ``ml_publish_log`` row, from the checksum of the rows loaded."""
        return {
            "model": self.model,
            "ds": self.ds,
            "model_version": self.model_version,
            "rows_published": checksum.rows,
            "checksum": checksum.hexdigest(),
            "run_id": self.run_id,
            "published_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        }

    def upsert_only(self, backend: str) -> None:
        """Refuse ``publish.mode: partitioned`` on a backend without it: its readers would read
        ``<model>_history`` and ``<model>_base``, which this backend's publish does not keep."""
        if self.mode != "upsert":
            raise PublishError(
                f"{self.table.name}: publish.mode: {self.mode} needs Aurora MySQL or MariaDB (EXCHANGE PARTITION); "
                f"this app DB is {backend}: set publish.mode: upsert in the {self.model} spec"
            )


@dataclass(frozen=True)
class Published:
    rows: int
    checksum: str
    path: str  # how it went, for the log: "daily" / "backfill" (MySQL), "upsert" (SQLite)


class Publisher(Protocol):
    def publish(self, day: Day) -> Published:
        """Publish ``day`` (see the module's promises); raise and leave the tables readers read
        as they were if any of them cannot be kept."""
        ...

    def stop(self) -> None:
        """Stop a publish running in another thread now (Airflow's ``on_kill``: within a few
        seconds, SIGKILL follows): its statements end, its locks are freed, nothing is committed
        after; the publish raises :class:`PublishStopped`. No publish running: nothing to do."""
        ...


class AppDb(Protocol):
    """What a backend's engines and publisher use of :class:`~mlbatch.backends.appdb.hook.AppDbHook`.

    A protocol, so that the backends and their publishers (which the hook builds) never import
    the hook: the hook imports them.
    """

    @property
    def url(self) -> str: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def publish_engine(self) -> Engine: ...

    @property
    def load_role(self) -> str | None: ...

    def server_engine(self, *, connect_args: dict[str, Any] | None = None, **kwargs: Any) -> Engine: ...

    def mysql_engine(
        self, *, local_files: bool, connect_args: dict[str, Any] | None = None, **kwargs: Any
    ) -> Engine: ...

    def begin(self) -> AbstractContextManager[Connection]: ...

    def ensure_schema(self, predictions: Iterable[tuple[str, str]] = ()) -> None: ...

    def upsert(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[dict[str, Any]],
        *,
        update: Sequence[str],
        newer_than: str | None = None,
    ) -> None: ...


class _Stoppable(Protocol):
    @property
    def stopped_by(self) -> str | None: ...


@contextmanager
def stops_said_plainly(running: _Stoppable, day: Day, ended: str, *, own_stops_too: bool = False) -> Iterator[None]:
    """Whatever a publish stopped by ``on_kill`` raised (a killed query, a cancelled COPY, a closed
    socket), re-raised as one :class:`PublishStopped` that says so; ``ended`` says what became of
    the sessions. Any error while not stopped stays itself, and so does a :class:`PublishStopped`
    the publisher raised itself (MySQL: a timeout's interruption, which stopped the sessions)
    unless ``own_stops_too`` (PostgreSQL: the stopped COPY stream's, which names no kill)."""
    try:
        yield
    except Exception as exc:
        if running.stopped_by != "on_kill" or (isinstance(exc, PublishStopped) and not own_stops_too):
            raise
        what = f"{day.table.name}: the publish of {day.ds} was stopped (on_kill), {ended}"
        raise PublishStopped(f"{what}; nothing was committed after the stop ({exc})") from exc


def check_count(where: str, loaded: int, expected: int) -> None:
    """``where`` names the load and its table, e.g. ``LOAD DATA into m_history__stage``."""
    if loaded != expected:
        raise PublishError(f"{where}: {loaded:,} rows loaded of {expected:,} written")


@contextmanager
def step(what: str, table: str) -> Iterator[None]:
    """Log how long one publish step took (the benchmark and on-call read these)."""
    started = time.perf_counter()
    yield
    log.info("%s: %s took %.2f s", table, what, time.perf_counter() - started)


@contextmanager
def transaction(conn: Connection, begin: str = "START TRANSACTION") -> Iterator[None]:
    """An explicit transaction in an autocommit session (a publisher's own, never pooled): ``begin``
    (MySQL's START TRANSACTION, PostgreSQL's BEGIN), COMMIT at the end, ROLLBACK on any error."""
    conn.exec_driver_sql(begin)
    try:
        yield
        conn.exec_driver_sql("COMMIT")
    except BaseException:
        with suppress(Exception):  # a dead session is rolled back by the server anyway
            conn.exec_driver_sql("ROLLBACK")
        raise
