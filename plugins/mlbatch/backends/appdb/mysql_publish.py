"""Publishing a day into Aurora MySQL / MariaDB: the :class:`MySqlPublisher`, and the load-exchange-
upsert (:func:`publish_mysql`) that it and the benchmark's fused pipeline share.

Two tables per model: ``<model>_predictions`` (the newest prediction per entity, read by key)
and ``<model>_history`` (every published day, partitioned by day; kept
``publish.history_days``). One session, under a per-model named lock, plus loading sessions:

* the day arrives as TSV (:mod:`mlbatch.backends.appdb.tsv`) streamed out of the prediction shards in key
  order, cut into key ranges (:mod:`mlbatch.backends.appdb.key_ranges`) that parallel sessions load
  through named pipes (:mod:`mlbatch.backends.appdb.pipes`, :mod:`mlbatch.backends.appdb.mysql_load`) into a
  staging table shaped like one partition of the history; or, with Aurora's ``LOAD DATA FROM
  S3``, written to the object store first and loaded from there;
* ``EXCHANGE PARTITION`` makes the staging table the day's partition of the history (a
  metadata operation, whatever the table holds);
* ONE transaction: the guarded upsert ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE col =
  IF(VALUES(ds) >= ds, ...)`` of that partition into ``<model>_predictions`` (one statement per
  key range) plus the day's ``ml_publish_log`` row. The COMMIT is when the day becomes visible.

``publish.mode: partitioned`` writes each row once: no upsert. The exchange itself makes the day
visible, in ``<model>_history``, which readers then read with ``<model>_base``
(:func:`~mlbatch.backends.appdb.mysql_sql.latest_sql`: the newest of an entity's rows); the log
row follows the exchange (a run killed in between leaves the day visible without its log row, so
the export gate cannot pass, and the rerun completes it). A day expiring from the history first
moves the rows the next kept day did not re-score into the base
(:func:`~mlbatch.backends.appdb.mysql_sql.compact_sql`); a backfill older than the history keeps
is upserted into the base. The price: a lookup probes one index per kept day, and the history's
DDL (add, exchange, drop partition) waits for readers' open transactions, new lookups queueing
behind it, at most ``locks.LOCK_WAIT_S`` per try (benchmarks/README.md, publish modes).

Why this design. The copy-and-swap before it built a fresh table from the day plus every old
row the day lacked: a day of 10M rows into a table of 100M copied 90M rows, and its RENAME took
exclusive metadata locks on the tables readers read. Here every step touches the day's rows
only (B-tree lookups of the upsert grow with log(table)), the tables readers read get DML only,
and the DDL (history partitions) waits at most ``locks.LOCK_WAIT_S`` per try.

Why a crash at any point is safe. Before the transaction only the staging table and the day's
history partition have changed; the partition is exchanged back if the upsert fails, and a run
killed in between leaves a history day without its log row, which the rerun replaces. The
transaction is InnoDB's: a killed session is rolled back by the server, and its named lock is
freed. A stopped task kills its sessions (:meth:`MySqlPublisher.stop`, its ``on_kill``), so the
retry just runs. Reruns are idempotent: the partition is replaced whole, the upsert rewrites the
same values, the log row is upserted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, func, inspect, select

from mlbatch import names
from mlbatch.backends.appdb import key_ranges, locks, schema
from mlbatch.backends.appdb.checksum import RowChecksum
from mlbatch.backends.appdb.mysql_load import LoadSource, in_sessions, load_all
from mlbatch.backends.appdb.mysql_sessions import PublishSessions, named_lock
from mlbatch.backends.appdb.mysql_sql import (
    EMPTY_PARTITION,
    add_partition_sql,
    compact_sql,
    exchange_sql,
    expired_partitions,
    guarded_upsert_sql,
    history_ddl,
    log_upsert_sql,
    model_lock,
    partition_day,
    partition_name,
    q,
    side_name,
    staging_ddl,
)
from mlbatch.backends.appdb.pipes import piped_sources
from mlbatch.backends.appdb.publisher import (
    COLUMNS,
    HISTORY_DAYS,
    AppDb,
    Day,
    Published,
    PublishError,
    step,
    stops_said_plainly,
    transaction,
)
from mlbatch.backends.appdb.tsv import tsv_writer

if TYPE_CHECKING:
    from mlbatch.backends.store import ObjectStore

log = logging.getLogger(__name__)

# Sessions that load the day's key ranges in parallel (integer keys: Arrow's order is MySQL's;
# string keys follow the collation, so they load in one session). The server parses and
# inserts a LOAD DATA on one core; two match this 2-core machine; a bigger Aurora instance may
# take more.
LOAD_SESSIONS = 2

LogRow = dict[str, Any] | Callable[[], dict[str, Any]]


class MySqlPublisher:
    """The :class:`~mlbatch.backends.appdb.publisher.Publisher` of Aurora MySQL and MariaDB.

    ``load_from``: an ``s3://`` object store to stage the TSV in for Aurora's ``LOAD DATA FROM
    S3`` (the cluster needs an IAM role for S3, and the session the role that grants the load:
    :attr:`AppDb.load_role`); None streams it from the worker instead. :meth:`stop` kills a
    running publish's sessions (:mod:`mlbatch.backends.appdb.mysql_sessions`).
    """

    def __init__(self, db: AppDb, *, sessions: int = LOAD_SESSIONS, load_from: ObjectStore | None = None):
        if load_from is not None and load_from.is_local:
            raise ValueError(f"LOAD DATA FROM S3 needs an s3:// object store, not {load_from.root}")
        self.db, self.sessions, self.load_from = db, sessions, load_from
        self._running: PublishSessions | None = None

    def publish(self, day: Day) -> Published:
        self.db.ensure_schema([(day.model, day.key_type)])
        local = self.load_from is None  # FROM S3: the server reads the object, no client file
        running = self._running = PublishSessions(self.db, local_files=local, load_role=self.db.load_role)
        try:
            with stops_said_plainly(running, day, "its app DB sessions killed"):
                if self.load_from is not None:
                    return self._publish_from_s3(day, self.load_from, running)
                return self._publish_streamed(day, running)
        finally:
            running.dispose()

    def stop(self) -> None:
        """Kill the running publish's sessions (KILL QUERY, then KILL): see :mod:`~.mysql_sessions`."""
        if self._running is not None:
            self._running.stop()

    def _publish_streamed(self, day: Day, running: PublishSessions) -> Published:
        checksum = RowChecksum()
        with key_ranges.sorted_ranges(day, self._sessions(day)) as shares:
            lock = threading.Lock()
            writers = [tsv_writer(day, share.batches(), checksum, lock) for share in shares]
            with piped_sources(writers, [(s.key_from, s.key_to) for s in shares]) as (sources, finish):

                def log_row_after_load() -> dict[str, Any]:  # the checksum is complete once the writers are
                    finish()
                    return day.log_row(checksum)

                path = publish_mysql(
                    self.db,
                    day.table,
                    sources,
                    day.rows,
                    log_row_after_load,
                    day.ds,
                    history_days=day.history_days,
                    commit=day.commit,
                    mode=day.mode,
                    sessions=running,
                )
        return Published(checksum.rows, checksum.hexdigest(), path)

    def _publish_from_s3(self, day: Day, store: ObjectStore, running: PublishSessions) -> Published:
        """Aurora's LOAD DATA FROM S3: the day's key ranges are written to the object store
        first, one TSV object per session, then loaded (and, with ``commit: key_range``,
        upserted) by the sessions in parallel, as the streamed path does."""
        folder = f"publish/{day.model}/{day.ds.isoformat()}/{day.run_key}/"
        checksum = RowChecksum()
        try:
            with key_ranges.sorted_ranges(day, self._sessions(day)) as shares:
                sources = [self._stage_share(store, folder, i, day, share, checksum) for i, share in enumerate(shares)]
            how = publish_mysql(
                self.db,
                day.table,
                sources,
                day.rows,
                day.log_row(checksum),
                day.ds,
                history_days=day.history_days,
                commit=day.commit,
                mode=day.mode,
                sessions=running,
            )
        finally:
            with suppress(OSError):
                store.delete_prefix(folder)
        return Published(checksum.rows, checksum.hexdigest(), how)

    @staticmethod
    def _stage_share(
        store: ObjectStore, folder: str, index: int, day: Day, share: key_ranges.Session, checksum: RowChecksum
    ) -> LoadSource:
        key = f"{folder}predictions-{index:03d}.tsv"
        with store.open_output(key) as out:
            tsv_writer(day, share.batches(), checksum, threading.Lock())(out)
        return LoadSource(s3_uri=store.uri(key), key_from=share.key_from, key_to=share.key_to)

    def _sessions(self, day: Day) -> int:
        """Load sessions for the day: the spec's (else the publisher's); string keys load in one,
        since their ranges would follow the server's collation, not Arrow's byte order."""
        return (day.sessions or self.sessions) if day.key_type == "integer" else 1


def publish_mysql(
    db: AppDb,
    table: Table,
    source: LoadSource | Sequence[LoadSource],
    rows: int,
    log_row: LogRow,
    day: date | None = None,
    *,
    history_days: int = HISTORY_DAYS,
    commit: str = "day",
    mode: str = "upsert",
    sessions: PublishSessions | None = None,
) -> str:
    """Publish the day in ``source`` into ``table`` (and its history) with its log row; return
    ``daily`` (no newer day exists) or ``backfill``: the same steps, named for the log.

    1. the day is loaded into a staging table ``<model>_history__stage`` shaped like one
       partition of ``<model>_history`` (a session per source, in parallel: disjoint key ranges)
       and its count checked against ``rows``;
    2. ``log_row`` is taken: a callable is evaluated now, after the load and before anything
       goes live (a streaming writer finishes its checksum there, the benchmark's pipeline runs
       its prediction gate there; raising drops the staging table);
    3. ``EXCHANGE PARTITION`` swaps the stage in as the day's partition of the history;
    4. ONE transaction upserts that partition into ``table`` (guarded: a row is replaced only by
       the same or a newer day), one statement per key range, and writes the log row; with
       ``commit="key_range"`` each key range is upserted and committed by its own session, in
       parallel, and the log row is written once every range has committed;
    5. history partitions older than ``history_days`` before the newest day are dropped.

    ``mode="partitioned"`` (one write per row) skips the upsert: the exchange (step 3) makes the
    day visible, in ``<model>_history`` itself, and the log row follows it; a day older than the
    history keeps is upserted into ``<model>_base`` instead, with its log row in one transaction;
    step 5 first moves each expiring day's last predictions into ``<model>_base``
    (:func:`~mlbatch.backends.appdb.mysql_sql.compact_sql`). Readers read both
    (:func:`~mlbatch.backends.appdb.mysql_sql.latest_sql`). Readers of the history are DDL's
    readers: the exchange waits for their open transactions (at most :data:`locks.LOCK_WAIT_S`
    per try), and new lookups queue behind the waiting exchange meanwhile.
    ``sessions`` opens every session (default: on ``db``) and can kill them from another thread.

    Readers of ``table`` see the old rows until the COMMIT and all of the day after it; the
    table is never the target of DDL, so point lookups never queue on a metadata lock. Each DDL
    waits at most :data:`locks.LOCK_WAIT_S` and is retried; a step still blocked raises
    :class:`locks.LockWaitError` naming the blocker, with ``table`` and the log unchanged.
    """
    sources = [source] if isinstance(source, LoadSource) else list(source)
    if day is None:
        if callable(log_row):
            raise TypeError("publish_mysql: pass day= when log_row is evaluated after the load")
        day = log_row["ds"]
    if commit not in ("day", "key_range"):
        raise ValueError(f"publish commit must be 'day' or 'key_range', not {commit!r}")
    if mode not in ("upsert", "partitioned"):
        raise ValueError(f"publish mode must be 'upsert' or 'partitioned', not {mode!r}")
    own = sessions or PublishSessions(db)
    try:
        with own.open() as conn, named_lock(conn, model_lock(table.name)):
            publish = _DayPublish(own, conn, table, day, per_range=commit == "key_range", partitioned=mode != "upsert")
            return publish.run(sources, rows, log_row, history_days)
    finally:
        if sessions is None:
            own.dispose()


class _DayPublish:
    """One publish of ``day`` into ``table``, in ``conn``: a session holding the model's named lock."""

    def __init__(
        self,
        sessions: PublishSessions,
        conn: Connection,
        table: Table,
        day: date,
        *,
        per_range: bool = False,
        partitioned: bool = False,
    ):
        self.sessions, self.conn, self.table, self.day, self.per_range = sessions, conn, table, day, per_range
        self.partitioned = partitioned
        self.name = table.name
        self.history = schema.history_for(table).name
        self.base = schema.base_for(table).name
        self.stage = side_name(self.history, "stage")
        self.own = {locks.session_id(conn)}
        # MariaDB 10.11 always validates an exchanged partition (WITHOUT VALIDATION came in 11.4).
        self.validate = "mariadb" in str(conn.exec_driver_sql("SELECT VERSION()").scalar()).lower()

    def run(self, sources: list[LoadSource], rows: int, log_row: LogRow, history_days: int) -> str:
        self._ddl("history table", history_ddl(schema.history_for(self.table)))
        # Leftovers of a killed run (and of the copy-and-swap design before this one) are
        # dropped; nothing reads them.
        leftovers = [self.stage] + [side_name(self.name, side) for side in ("new", "old", "stage")]
        self._ddl("drop leftovers", "DROP TABLE IF EXISTS " + ", ".join(q(t) for t in leftovers))
        newest = self._newest_day()  # stable: every writer of the tables holds the model lock
        self._base_for_mode()
        self._ddl("staging table", staging_ddl(schema.history_for(self.table), self.stage))
        try:
            load_all(self.sessions, self.conn, sources, self.stage, rows)
            row = log_row() if callable(log_row) else log_row
            if not self.partitioned:
                self._exchange_and_upsert(sources, row)
            elif newest is not None and self.day < _cutoff(newest, history_days):
                self._into_base(row)
            else:
                self._exchange(row)
        finally:
            with suppress(Exception):  # a dead session leaves it to the next run, which drops it first
                self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(self.stage)}")
        self._expire_history(max(self.day, newest) if newest else self.day, history_days)
        return "daily" if newest is None or newest <= self.day else "backfill"

    def _ddl(self, what: str, sql: str) -> None:
        self.sessions.check(what)
        with step(what, self.name):
            locks.retrying(
                self.conn, f"{self.name}: {what}", lambda: self.conn.exec_driver_sql(sql), own_sessions=self.own
            )

    def _base_for_mode(self) -> None:
        """``<model>_base`` exists once the model has been published in partitioned mode: the first
        such publish creates it (seeded from ``<model>_predictions``, when switching from upsert);
        an upsert refuses to run beside it, as it would leave ``<model>_predictions`` without the
        days published since."""
        found = inspect(self.conn).has_table(self.base)
        if not self.partitioned:
            if found:
                raise PublishError(
                    f"{self.name}: {self.base} exists, so this model was published with publish.mode: partitioned, "
                    f"and {self.name} lacks the days published since; keep publish.mode: partitioned, or rebuild "
                    f"{self.name} from {self.history} and {self.base} and drop {self.base} before switching back"
                )
            return
        if found:
            return
        # Built aside and renamed in: a publish killed while seeding leaves no half-seeded base.
        seed = side_name(self.base, "seed")
        base = schema.base_for(self.table)
        self._ddl("drop base seed", f"DROP TABLE IF EXISTS {q(seed)}")
        self._ddl("base table", staging_ddl(base, seed))
        cols = ", ".join(q(c) for c in COLUMNS)
        with step(f"seed {self.base} from {self.name}", self.base):
            self.conn.exec_driver_sql(f"INSERT INTO {q(seed)} ({cols}) SELECT {cols} FROM {q(self.name)}")
        self._ddl("base table rename", f"RENAME TABLE {q(seed)} TO {q(self.base)}")

    def _exchange(self, row: dict[str, Any]) -> None:
        """Partitioned mode: the exchange makes the day visible, in the table readers read; then its log row.
        A publish killed in between leaves the day visible without its log row, so the export gate
        cannot pass; the rerun replaces the partition and writes the row."""
        self._swap_in()
        with step("publish log row", self.name):
            self.conn.exec_driver_sql(log_upsert_sql(schema.publish_log.name), row)

    def _into_base(self, row: dict[str, Any]) -> None:
        """Partitioned mode, a backfill older than the history keeps: upserted (guarded) into the
        base with its log row, in one transaction, as the upsert mode does into its table."""

        def upsert() -> None:
            self.sessions.check(f"the upsert of {self.day} into {self.base}")
            with transaction(self.conn):
                with step(f"guarded upsert into {self.base} (older than the history keeps)", self.base):
                    self.conn.exec_driver_sql(guarded_upsert_sql(self.base, self.stage))
                self.conn.exec_driver_sql(log_upsert_sql(schema.publish_log.name), row)

        locks.retrying(self.conn, f"{self.base}: upsert of {self.day}", upsert, own_sessions=self.own)

    def _swap_in(self) -> str:
        """The staged day becomes its partition of the history (added first if new); the statement, to swap back."""
        part = partition_name(self.day)
        if not self._has_partition(part):
            self._ddl(f"add partition {part}", add_partition_sql(self.history, self.day))
        swap = exchange_sql(self.history, self.day, self.stage, validate=self.validate)
        self._ddl(f"exchange partition {part}", swap)
        return swap

    def _exchange_and_upsert(self, sources: list[LoadSource], row: dict[str, Any]) -> None:
        swap = self._swap_in()
        if self.per_range and len(sources) > 1:
            self._upsert_per_range(sources, row)
            return
        try:
            locks.retrying(
                self.conn,
                f"{self.name}: upsert of {self.day}",
                lambda: self._upsert(sources, row),
                own_sessions=self.own,
            )
        except BaseException:
            # Not committed: the stage holds the partition's former rows; swap them back.
            with suppress(Exception):
                self.conn.exec_driver_sql(swap)
            raise

    def _upsert(self, sources: list[LoadSource], row: dict[str, Any]) -> None:
        """The day's partition into the table and the log row, in one transaction (batched by key
        range: each statement's progress is logged; the transaction makes the day visible at once)."""
        ranges = [(s.key_from, s.key_to) for s in sources] if len(sources) > 1 else [(None, None)]
        self.sessions.check(f"the upsert of {self.day}")
        with transaction(self.conn):
            for lo, hi in ranges:
                bounds = f" keys [{lo}, {hi})" if (lo, hi) != (None, None) else ""
                with step(f"guarded upsert{bounds}", self.name):
                    self._upsert_range(self.conn, lo, hi)
            self.conn.exec_driver_sql(log_upsert_sql(schema.publish_log.name), row)

    def _upsert_range(self, conn: Connection, lo: Any, hi: Any) -> None:
        """The guarded upsert of the day's keys in [lo, hi) (None: unbounded) from the history."""
        sql = guarded_upsert_sql(self.name, self.history, day=True, key_from=lo is not None, key_to=hi is not None)
        conn.exec_driver_sql(sql, {"ds": self.day, "key_from": lo, "key_to": hi})

    def _partitions(self) -> list[str]:
        return [
            r[0]
            for r in self.conn.exec_driver_sql(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (self.history,),
            )
        ]

    def _upsert_per_range(self, sources: list[LoadSource], row: dict[str, Any]) -> None:
        """Each key range upserted and committed by its own session, in parallel; then the log row.

        A range that fails leaves the others committed: the history keeps the day (it matches
        what is visible) and no log row is written, so the export gate cannot pass and the
        rerun, which is idempotent, completes the day."""

        def upsert(source: LoadSource, own: Connection) -> None:
            lo, hi = source.key_from, source.key_to

            def committed() -> None:
                with transaction(own):
                    self._upsert_range(own, lo, hi)

            with step(f"guarded upsert keys [{lo}, {hi}), own transaction", self.name):
                what = f"{self.name}: upsert of {self.day} keys [{lo}, {hi})"
                locks.retrying(own, what, committed, own_sessions=self.own)

        futures = in_sessions(self.sessions, sources, upsert, "mlbatch-upsert")
        failed = {s: f.exception() for s, f in zip(sources, futures, strict=True) if f.exception() is not None}
        if failed:
            done = [f"[{s.key_from}, {s.key_to})" for s in sources if s not in failed]
            bad = next(iter(failed.values()))
            raise PublishError(
                f"{self.name}: the upsert of {self.day} failed in {len(failed)} of {len(sources)} key ranges "
                f"(committed: {', '.join(done) or 'none'}); the day is partly visible and has no log row: "
                f"rerun the publish, it completes the day. First error: {bad}"
            ) from bad
        self.conn.exec_driver_sql(log_upsert_sql(schema.publish_log.name), row)

    def _newest_day(self) -> date | None:
        """The newest day published: the model's newest ``ml_publish_log`` row, committed with
        the day's upsert (a history partition left by a killed run has none). ``MAX(ds)`` of the
        predictions table would need an index on ds that every upsert pays for."""
        log_table = schema.publish_log
        model = names.model_of_predictions_table(self.name)
        return self.conn.execute(select(func.max(log_table.c.ds)).where(log_table.c.model == model)).scalar()

    def _has_partition(self, partition: str) -> bool:
        return partition in self._partitions()

    def _expire_history(self, newest: date, history_days: int) -> None:
        """Drop the expired days' partitions (metadata only). The day is already published: a
        blocked drop is logged and left to the next run, not a failed task."""
        kept = self._partitions()
        expired = expired_partitions(kept, newest, history_days)
        if not expired:
            return
        if self.partitioned:
            expired = self._compact(expired, sorted(set(kept) - set(expired)))
            if not expired:
                return
        sql = f"ALTER TABLE {q(self.history)} DROP PARTITION " + ", ".join(q(p) for p in expired)
        try:
            with step(f"drop {len(expired)} expired history partitions", self.history):
                locks.retrying(
                    self.conn, f"{self.history}: expire", lambda: self.conn.exec_driver_sql(sql), own_sessions=self.own
                )
        except locks.LockWaitError as exc:
            log.warning("%s", exc)

    def _compact(self, expired: list[str], kept: list[str]) -> list[str]:
        """Partitioned mode: each expiring day's last predictions moved into the base (oldest day
        first, each in its own transaction), before its partition is dropped; returns the days
        moved. One that fails is logged and left, with every later one, to the next publish
        (compacting twice is idempotent: the upsert is guarded)."""
        days = [partition_day(p) for p in sorted(expired)] + [partition_day(p) for p in kept if p != EMPTY_PARTITION]
        moved = []
        for i, part in enumerate(sorted(expired)):
            after = days[i + 1] if i + 1 < len(days) else None
            params = {"ds": days[i], "next_ds": after}
            sql = compact_sql(self.base, self.history, next_day=after is not None)

            def move(sql: str = sql, params: dict[str, Any] = params) -> None:
                with transaction(self.conn):
                    self.conn.exec_driver_sql(sql, params)

            try:
                with step(f"move {days[i]}'s last predictions into {self.base}", self.base):
                    locks.retrying(self.conn, f"{self.base}: compact {days[i]}", move, own_sessions=self.own)
            except locks.LockWaitError as exc:
                log.warning("%s", exc)
                break
            moved.append(part)
        return moved


def _cutoff(newest: date, history_days: int) -> date:
    """The oldest day the history keeps (``expired_partitions``' rule)."""
    return newest - timedelta(days=history_days - 1)
