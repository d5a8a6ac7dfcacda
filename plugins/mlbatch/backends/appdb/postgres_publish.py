"""Publishing a day into Aurora PostgreSQL / PostgreSQL: the :class:`PostgresPublisher`.

The same two tables per model as on MySQL: ``<model>_predictions`` (the newest prediction per
entity, read by key) and ``<model>_history`` (every published day, ``PARTITION BY LIST (ds)``, a
partition per day, kept ``publish.history_days``). One session, holding the model's advisory lock
(:func:`mlbatch.backends.appdb.locks.advisory_lock`) for the whole publish:

1. the day's partition of the history is created if missing (an empty table attached with
   ``ATTACH PARTITION``, in one short transaction);
2. ``COPY ... FROM STDIN`` (psycopg2's ``copy_expert``) streams the day into a session-private
   ``TEMP`` staging table, as text the prediction shards are encoded to batch by batch
   (:mod:`mlbatch.backends.appdb.tsv`: PostgreSQL's text format is MySQL's ``LOAD DATA`` default); the
   count COPY reports is checked against the shards' and the checksum taken from the stream;
3. ONE transaction: the history's day deleted and re-inserted from the stage, the guarded upsert
   ``INSERT ... SELECT ... ON CONFLICT (entity_key) DO UPDATE ... WHERE EXCLUDED.ds >= ds`` into
   ``<model>_predictions``, the day's ``ml_publish_log`` row. The COMMIT is when the day becomes
   visible, all of it at once (history, latest table and log together);
4. history partitions older than ``history_days`` before the newest day are dropped.

How it keeps the promises of :mod:`mlbatch.backends.appdb.publisher`:

* readers never see a half day, and never wait: step 3 is one MVCC transaction of DML only, so a
  reader sees the old rows until the COMMIT and the whole day after it, and no reader waits for
  its row locks. The only DDL is on the history: step 1's ``ATTACH PARTITION`` takes a SHARE
  UPDATE EXCLUSIVE lock that readers and writers never wait for, and step 4's ``DROP`` of an
  expired partition is the one statement that makes new readers *of the history* queue, at most
  :data:`locks.LOCK_WAIT_S` per try (then it is left to the next run, as MySQL's is);
* never a newer day replaced: the upsert's ``WHERE EXCLUDED.ds >= ds`` (PostgreSQL evaluates
  every assignment against the old row, so the order of the columns does not matter);
* idempotent per day: a rerun deletes the day from the history and inserts it again, rewrites
  the same values and upserts the log row: the tables end the same;
* a crash at any point is safe: before step 3 only the session's own TEMP table and perhaps an
  empty partition exist; a killed session's transaction is rolled back by the server, its TEMP
  table dropped and its advisory lock freed, so the retry just runs. A stopped task
  (:meth:`PostgresPublisher.stop`, its ``on_kill``) cancels the running statement, then
  terminates the session.

Why a TEMP stage and DML rather than swapping partitions in as MySQL does: replacing a day's
partition needs ``DETACH PARTITION``, which takes an ACCESS EXCLUSIVE lock on the history until
the transaction ends, so every reader of the history would queue behind the upsert. The price is
one more copy of the day's rows (stage → history), still proportional to the day, never to the
table. ``publish.sessions`` and ``publish.commit: key_range`` are MySQL's throughput options for
its single-threaded ``LOAD DATA`` and undo-heavy upsert; here the day loads in one COPY and
commits in one transaction (as on SQLite), whatever the spec says.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
from psycopg2 import sql
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateTable

from mlbatch.backends.appdb import locks, schema
from mlbatch.backends.appdb.checksum import RowChecksum
from mlbatch.backends.appdb.publisher import (
    COLUMNS,
    READ,
    UPDATE,
    Day,
    Published,
    PublishError,
    PublishStopped,
    check_count,
    step,
    stops_said_plainly,
    transaction,
)
from mlbatch.backends.appdb.tsv import day_columns, tsv_chunk

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Psycopg2Connection

    from mlbatch.backends.appdb.publisher import AppDb

log = logging.getLogger(__name__)

NAME_LIMIT = 63  # PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)
STAGE = "mlbatch_publish_stage"  # a TEMP table: private to the session, so one name serves every model
COPY_READ_BYTES = 1 << 20  # what psycopg2 asks the stream for per CopyData message
KILL_TIMEOUT_S = 2  # the terminating session's connect timeout: on_kill has 5 s before SIGKILL
GRACE_S = 1.0  # how long a cancelled statement's clean-up may take before the session is terminated
_BOUND = re.compile(r"IN \('(\d{4}-\d{2}-\d{2})'\)")  # pg_get_expr of a day partition's bound


def pg_name(base: str, suffix: str) -> str:
    """``<base>_<suffix>`` within PostgreSQL's 63 characters (a hash keeps long names distinct)."""
    name = f"{base}_{suffix}"
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: NAME_LIMIT - len(suffix) - 10]}_{digest}_{suffix}"


def partition_name(history: str, day: date) -> str:
    return pg_name(history, f"p{day:%Y%m%d}")


def compose(conn: Connection, template: str, **names: str | Sequence[str]) -> str:
    """``template`` with each ``{name}`` an identifier (a string) or a list of them, quoted by
    psycopg2 (:class:`psycopg2.sql.Identifier`); values stay ``%(name)s`` parameters."""
    parts = {
        k: sql.Identifier(v) if isinstance(v, str) else sql.SQL(", ").join(map(sql.Identifier, v))
        for k, v in names.items()
    }
    # cast: SQLAlchemy types the DBAPI connection generically; the postgresql+psycopg2 dialect's is psycopg2's.
    return sql.SQL(template).format(**parts).as_string(cast("Psycopg2Connection", conn.connection.dbapi_connection))


def guarded_upsert_sql(conn: Connection, table: str) -> str:
    """The stage's rows into ``table``; a row is replaced only by the same or a newer ``ds``
    (every assignment reads the old row: unlike MySQL's, their order does not matter)."""
    ident = sql.Identifier
    sets = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(c)) for c in UPDATE)
    statement = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM pg_temp.{stage} "
        "ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE EXCLUDED.{ds} >= {table}.{ds}"
    ).format(
        table=ident(table),
        cols=sql.SQL(", ").join(map(ident, COLUMNS)),
        stage=ident(STAGE),
        key=ident("entity_key"),
        sets=sets,
        ds=ident("ds"),
    )
    return statement.as_string(cast("Psycopg2Connection", conn.connection.dbapi_connection))  # psycopg2's, as above


def copy_chunks(day: Day, checksum: RowChecksum) -> Iterator[pa.Buffer]:
    """The day's rows as COPY text, a batch at a time, their checksum added to ``checksum`` as
    they go (columns of :data:`~mlbatch.backends.appdb.publisher.COLUMNS`, the day's ``ds`` filled in)."""
    for batch in day.read(READ):
        checksum.update(batch)
        yield tsv_chunk(day_columns(batch, day.ds))


class CopyStream:
    """The day's COPY text as the file psycopg2's ``copy_expert`` reads (``read(size)``), made as
    it is read: nothing is held but one batch's text. Once the publish is stopped a read raises,
    which aborts the COPY at once (a COPY whose statement the server cancelled would otherwise
    be fed to its end before the client learns of it)."""

    def __init__(self, chunks: Iterator[pa.Buffer], sessions: PublishSession):
        self._chunks, self._sessions = chunks, sessions
        self._left = memoryview(b"")
        # What a read raised: psycopg2 reports it as the COPY's QueryCanceled ("error in .read()
        # call"); the publish raises this one instead, so a shard's error surfaces as itself.
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._read(size)
        except BaseException as exc:
            self.error = exc
            raise

    def _read(self, size: int) -> bytes:
        self._sessions.check("the rest of the COPY")
        while not len(self._left):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._left = memoryview(chunk)
        n = len(self._left) if size < 0 else min(size, len(self._left))
        out, self._left = self._left[:n].tobytes(), self._left[n:]
        return out


class PublishSession:
    """The session of one publish, and how another thread (or a signal handler) stops it.

    Its own engine without a pool: the session is closed at the end, so a session-level
    advisory lock or TEMP table can never outlive the publish in a pool. While it is open its
    backend pid is known; :meth:`stop` (the task's ``on_kill``) cancels the running statement
    (psycopg2's ``cancel()``: libpq's cancel request on a socket of its own, safe from another
    thread) and, if the session is still open after ``grace_s``, ends it with
    ``pg_terminate_backend``: the server rolls its transaction back and frees its locks. A session
    that ends by an exception is terminated the same way on its way out (a timeout raised in the
    worker mid-statement leaves the statement running in the server)."""

    def __init__(self, db: AppDb):
        self.db = db
        self.engine = db.server_engine(poolclass=NullPool)
        # Made now, not in stop(): stop() may run in a signal handler that interrupted this
        # thread anywhere; a NullPool engine shares no lock with it.
        self._killer = db.server_engine(poolclass=NullPool, connect_args={"connect_timeout": KILL_TIMEOUT_S})
        self._lock = threading.RLock()  # re-entrant: stop() may run in a signal handler on the thread holding it
        self._stopped = threading.Event()
        self._pid: int | None = None
        self._dbapi: Any = None
        self.stopped_by: str | None = None  # why stop() was first called: "on_kill"

    def check(self, what: str) -> None:
        """Raise :class:`PublishStopped` once :meth:`stop` was called."""
        if self._stopped.is_set():
            raise PublishStopped(f"the publish was stopped before {what}; nothing after it ran")

    @contextmanager
    def open(self) -> Iterator[Connection]:
        """The autocommit session with short lock waits, known by its pid until it ends."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        pid: int | None = None
        clean = False
        try:
            pid = locks.session_id(conn)
            with self._lock:
                self.check(f"session {pid} was used")  # under the lock stop() takes: none escapes it
                self._pid, self._dbapi = pid, conn.connection.dbapi_connection
            locks.short_waits(conn)
            yield conn
            clean = True
        finally:
            with self._lock:
                self._pid = self._dbapi = None
            if not clean and pid is not None:
                self._terminate(pid)  # its statement may still run on the server
                conn.invalidate()
            conn.close()

    def stop(self, grace_s: float = GRACE_S, *, why: str = "on_kill") -> int | None:
        """Cancel the running statement, terminate the session if it is still open after
        ``grace_s``; no session opens afterwards. Returns the pid found open, if any."""
        with self._lock:
            if not self._stopped.is_set():
                self.stopped_by = why
            self._stopped.set()
            pid, dbapi = self._pid, self._dbapi
        if pid is None:
            return None
        log.warning("stopping the publish: cancelling the statement of app DB session %s", pid)
        with suppress(Exception):  # a session that is gone has nothing to cancel
            dbapi.cancel()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._pid == pid:
            time.sleep(0.05)
        if self._pid == pid:
            log.warning("stopping the publish: terminating app DB session %s, still open after %.1f s", pid, grace_s)
            self._terminate(pid)
        return pid

    def _terminate(self, pid: int) -> None:
        """``pg_terminate_backend`` from a session of its own; never raises (it runs in on_kill and
        on the way out of a failed session: the first error must show)."""
        try:
            with self._killer.connect() as side:
                side.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)", {"pid": int(pid)})
        except Exception as exc:  # noqa: BLE001 - say what may still run instead
            log.warning(
                "could not terminate the publish's app DB session %s (%s); it may still run and hold the model's "
                "advisory lock until the server ends it: see pg_stat_activity",
                pid,
                exc,
            )

    def dispose(self) -> None:
        self.engine.dispose()
        self._killer.dispose()


class PostgresPublisher:
    """The :class:`~mlbatch.backends.appdb.publisher.Publisher` of Aurora PostgreSQL and PostgreSQL."""

    def __init__(self, db: AppDb):
        self.db = db
        self._running: PublishSession | None = None

    def publish(self, day: Day) -> Published:
        day.upsert_only("PostgreSQL")
        self.db.ensure_schema([(day.model, day.key_type)])
        running = self._running = PublishSession(self.db)
        lock = f"mlb.pub.{day.table.name}"  # MySQL's GET_LOCK name; hashed to the advisory key
        try:
            with (
                stops_said_plainly(running, day, "its app DB session ended", own_stops_too=True),
                running.open() as conn,
                locks.advisory_lock(conn, lock, locks.MODEL_LOCK_WAIT_S),
            ):
                return _DayPublish(running, conn, day).run()
        finally:
            running.dispose()

    def stop(self) -> None:
        """Stop the running publish: see :class:`PublishSession`."""
        if self._running is not None:
            self._running.stop()


class _DayPublish:
    """One publish of ``day`` in ``conn``: a session holding the model's advisory lock."""

    def __init__(self, session: PublishSession, conn: Connection, day: Day):
        self.session, self.conn, self.day = session, conn, day
        self.table = day.table.name
        self.history_table = schema.history_for(day.table)
        self.history = self.history_table.name
        self.own = {locks.session_id(conn)}

    def run(self) -> Published:
        self._ddl("history table", str(CreateTable(self.history_table, if_not_exists=True).compile(self.conn)))
        partitions = self._partitions()
        newest = self._newest_day()  # stable: every writer of the tables holds the model's lock
        if self.day.ds not in partitions:
            self._add_partition()
        checksum = self._load()
        row = self.day.log_row(checksum)
        locks.retrying(
            self.conn, f"{self.table}: upsert of {self.day.ds}", lambda: self._swap_in(row), own_sessions=self.own
        )
        self.conn.exec_driver_sql(compose(self.conn, "DROP TABLE IF EXISTS pg_temp.{stage}", stage=STAGE))
        self._expire_history(max(self.day.ds, newest) if newest else self.day.ds)
        path = "daily" if newest is None or newest <= self.day.ds else "backfill"
        return Published(checksum.rows, checksum.hexdigest(), path)

    def _ddl(self, what: str, statement: str, params: dict[str, Any] | None = None) -> None:
        self.session.check(what)
        with step(what, self.table):
            locks.retrying(
                self.conn,
                f"{self.table}: {what}",
                lambda: self.conn.exec_driver_sql(statement, params or {}),
                own_sessions=self.own,
            )

    def _partitions(self) -> dict[date, str]:
        """The history's day partitions; an existing history that is not partitioned is an error."""
        partitioned = self.conn.exec_driver_sql(
            "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %(t)s AND n.nspname = current_schema()",
            {"t": self.history},
        ).scalar()
        if not partitioned:
            raise PublishError(
                f"{self.history} exists but is not partitioned by ds (PARTITION BY LIST (ds)): rename it away and "
                "rerun, the publish creates it"
            )
        rows = self.conn.exec_driver_sql(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace WHERE p.relname = %(t)s AND n.nspname = current_schema()",
            {"t": self.history},
        )
        found: dict[date, str] = {}
        for name, bound in rows:
            m = _BOUND.search(bound or "")
            if m:
                found[date.fromisoformat(m.group(1))] = name
        return found

    def _add_partition(self) -> None:
        """The day's partition, created empty and attached in one transaction: ``ATTACH``
        takes SHARE UPDATE EXCLUSIVE on the history (readers and writers never wait for it),
        where ``CREATE TABLE ... PARTITION OF`` would take ACCESS EXCLUSIVE."""
        part = partition_name(self.history, self.day.ds)

        def create_and_attach() -> None:
            with transaction(self.conn, begin="BEGIN"):
                like = "CREATE TABLE {part} (LIKE {history} INCLUDING ALL)"
                self.conn.exec_driver_sql(compose(self.conn, like, part=part, history=self.history))
                attach = "ALTER TABLE {history} ATTACH PARTITION {part} FOR VALUES IN (%(ds)s)"
                self.conn.exec_driver_sql(
                    compose(self.conn, attach, part=part, history=self.history), {"ds": self.day.ds}
                )

        self.session.check(f"partition {part}")
        with step(f"add partition {part}", self.table):
            locks.retrying(self.conn, f"{self.table}: add partition {part}", create_and_attach, own_sessions=self.own)

    def _load(self) -> RowChecksum:
        """COPY the day into the session's TEMP stage; its count checked, its checksum taken."""
        self.session.check("the load")
        self.conn.exec_driver_sql(compose(self.conn, "DROP TABLE IF EXISTS pg_temp.{stage}", stage=STAGE))
        create = "CREATE TEMP TABLE {stage} (LIKE {history} INCLUDING DEFAULTS)"  # no key: the history's checks it
        self.conn.exec_driver_sql(compose(self.conn, create, stage=STAGE, history=self.history))
        copy = compose(self.conn, "COPY pg_temp.{stage} ({cols}) FROM STDIN", stage=STAGE, cols=COLUMNS)
        checksum = RowChecksum()
        stream = CopyStream(copy_chunks(self.day, checksum), self.session)
        with step("COPY FROM STDIN", self.table):
            cursor = cast("Psycopg2Connection", self.conn.connection.dbapi_connection).cursor()  # psycopg2's
            try:
                # COPY FROM reads the stream with read() alone; types-psycopg2 asks for readline too.
                cursor.copy_expert(copy, stream, COPY_READ_BYTES)  # type: ignore[arg-type]
                loaded = cursor.rowcount
            except Exception:
                if stream.error is not None:
                    raise stream.error from None  # the shards' (or the stop's) error, not psycopg2's note of it
                raise
            finally:
                cursor.close()
        check_count(f"COPY of {self.table}'s day {self.day.ds} into its stage", loaded, self.day.rows)
        return checksum

    def _swap_in(self, row: dict[str, Any]) -> None:
        """The day into the history and the latest table, and its log row, in ONE transaction."""
        self.session.check(f"the upsert of {self.day.ds}")
        names = {"history": self.history, "stage": STAGE, "cols": COLUMNS}
        try:
            with transaction(self.conn, begin="BEGIN"):
                with step(f"history day {self.day.ds} replaced", self.history):
                    delete = compose(self.conn, "DELETE FROM {history} WHERE ds = %(ds)s", **names)
                    self.conn.exec_driver_sql(delete, {"ds": self.day.ds})
                    insert = "INSERT INTO {history} ({cols}) SELECT {cols} FROM pg_temp.{stage}"
                    self.conn.exec_driver_sql(compose(self.conn, insert, **names))
                with step("guarded upsert", self.table):
                    self.conn.exec_driver_sql(guarded_upsert_sql(self.conn, self.table))
                update = [c for c in row if c not in ("model", "ds")]
                self.session.db.upsert(self.conn, schema.publish_log, [row], update=update)
        except IntegrityError as exc:
            raise PublishError(
                f"{self.history}: the day {self.day.ds} of {self.table} holds an entity_key twice; nothing was "
                f"changed ({str(exc.orig).strip().splitlines()[0]})"
            ) from exc

    def _newest_day(self) -> date | None:
        """The newest day published: the model's newest ``ml_publish_log`` row, committed with the
        day's upsert (a partition left empty by a killed run has none)."""
        log_table = schema.publish_log
        return self.conn.execute(select(func.max(log_table.c.ds)).where(log_table.c.model == self.day.model)).scalar()

    def _expire_history(self, newest: date) -> None:
        """Drop the partitions of days more than ``history_days`` before the newest. The day is
        already published: a blocked drop is logged and left to the next run, not a failed task."""
        cutoff = newest - timedelta(days=self.day.history_days - 1)
        expired = sorted(name for day, name in self._partitions().items() if day < cutoff)
        if not expired:
            return
        drop = compose(self.conn, "DROP TABLE IF EXISTS {parts}", parts=expired)
        try:
            self._ddl(f"drop {len(expired)} expired history partitions", drop)
        except locks.LockWaitError as exc:
            log.warning("%s", exc)
