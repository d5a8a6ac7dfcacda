"""Readers never wait: the publish's DDL and transactions wait for locks briefly, then give up loudly.

MySQL's ``lock_wait_timeout`` (metadata locks: DDL, ``EXCHANGE PARTITION``) defaults to a year,
PostgreSQL's ``lock_timeout`` to forever. A DDL that waits for an exclusive lock also makes every
*new* reader of that table queue behind it, so one forgotten open transaction of the application
would stall all reads for as long as the publish waits. Every publishing session therefore sets
short waits (:data:`LOCK_WAIT_S`: MySQL's metadata and InnoDB row locks, PostgreSQL's
``lock_timeout``) and retries a bounded number of times with backoff; a step still blocked fails
the task with the blocking sessions named (id, user, host, how long its transaction has been
open, its last statement), and since each step is one DDL or one transaction, it leaves the
tables as they were.

A publish holds a lock per model for its whole run, so two publishes of one model queue: MySQL's
named lock (``GET_LOCK``, :func:`mlbatch.backends.appdb.mysql_sessions.named_lock`), PostgreSQL's
session advisory lock (:func:`advisory_lock`, keyed by a stable hash of the same name). Both are
freed by the server when the session ends, and both give up after the same timeout with the
same :class:`~mlbatch.backends.appdb.publisher.PublishError`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from mlbatch.backends.appdb.publisher import PublishError
from mlbatch.errors import StageFailed

log = logging.getLogger(__name__)

LOCK_WAIT_S = 2  # seconds a DDL (or the upsert) waits for a lock before it backs off
MODEL_LOCK_WAIT_S = 600  # the model's publish lock: a concurrent publish of the same model may take minutes
# Tries of a blocked step: 4 waits + 0.5 + 1 + 2 s of backoff. A wait is LOCK_WAIT_S per lock the
# statement takes: MariaDB's ALTER ... PARTITION waited about 4.5 s a try, about 20 s in all.
ATTEMPTS = 4
BACKOFF_S = 0.5  # first pause between tries; doubled each time

# ER_LOCK_WAIT_TIMEOUT (metadata and InnoDB row locks alike); ER_LOCK_DEADLOCK is retried too.
LOCK_ERRORS = {1205, 1213}
# PostgreSQL's SQLSTATEs for the same: lock_not_available (lock_timeout), deadlock_detected.
PG_LOCK_STATES = {"55P03", "40P01"}

T = TypeVar("T")


class LockWaitError(StageFailed, RuntimeError):
    """A publish step stayed blocked by another session; the message names it."""


def short_waits(conn: Connection, seconds: float | None = None) -> None:
    """This session waits at most ``seconds`` for a lock (MySQL: metadata and InnoDB row locks;
    PostgreSQL: any lock, ``lock_timeout``)."""
    s = seconds if seconds is not None else LOCK_WAIT_S
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT set_config('lock_timeout', %(ms)s, false)", {"ms": str(int(s * 1000))})
        return
    s = int(s)
    conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {s}, innodb_lock_wait_timeout = {s}")


def session_id(conn: Connection) -> int:
    """The server's id of this session: MySQL's connection id, PostgreSQL's backend pid."""
    sql = "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    return int(conn.exec_driver_sql(sql).scalar_one())


def error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_lock_wait(exc: BaseException) -> bool:
    """A lock wait that timed out, or a deadlock: the step may be retried."""
    pgcode = getattr(getattr(exc, "orig", None), "pgcode", None)
    return error_code(exc) in LOCK_ERRORS or pgcode in PG_LOCK_STATES


def _wait_s(conn: Connection) -> str:
    """How long this session waits for a lock, for the message (MySQL: seconds; PostgreSQL: ``2s``)."""
    if conn.dialect.name == "postgresql":
        return str(conn.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar())
    return f"{conn.exec_driver_sql('SELECT @@SESSION.lock_wait_timeout').scalar()} s"


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key for ``name``: the first 8 bytes of its SHA-256 as a signed
    bigint, the same in every process and Python (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(conn: Connection, name: str, timeout_s: float) -> Iterator[None]:
    """PostgreSQL's session advisory lock on ``name`` for this session, as MySQL's ``GET_LOCK``:
    waits at most ``timeout_s`` (then raises :class:`PublishError`), freed by the server if the
    session dies. Taken with ``pg_try_advisory_lock`` first, so an uncontended publish never waits; else
    ``pg_advisory_lock`` under a ``lock_timeout`` of ``timeout_s``, then the session's short waits
    again."""
    key = advisory_key(name)
    if not conn.exec_driver_sql("SELECT pg_try_advisory_lock(%(k)s)", {"k": key}).scalar():
        log.info("app DB lock %r (advisory key %d) is held by another publish: waiting %d s", name, key, timeout_s)
        before = conn.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar()
        short_waits(conn, timeout_s)
        try:
            conn.exec_driver_sql("SELECT pg_advisory_lock(%(k)s)", {"k": key})
        except DBAPIError as exc:
            if not is_lock_wait(exc):
                raise
            raise PublishError(
                f"could not take the app DB lock {name!r} (advisory key {key}) within {timeout_s} s "
                "(another publish holds it)"
            ) from None
        finally:
            conn.exec_driver_sql("SELECT set_config('lock_timeout', %(v)s, false)", {"v": before})
    try:
        yield
    finally:
        # A broken session cannot release it: its end frees the lock, and this error must not
        # hide the one that broke it.
        with suppress(Exception):
            conn.exec_driver_sql("SELECT pg_advisory_unlock(%(k)s)", {"k": key})


def retrying(
    conn: Connection,
    what: str,
    action: Callable[[], T],
    *,
    own_sessions: Iterable[int] = (),
    attempts: int | None = None,
    backoff_s: float | None = None,
) -> T:
    """Run ``action`` (one DDL, or one whole transaction that rolls back on error), retrying a
    lock wait timeout or deadlock with backoff; still blocked, raise :class:`LockWaitError`
    naming the sessions that hold transactions open (``own_sessions`` left out)."""
    tries = attempts if attempts is not None else ATTEMPTS
    pause = backoff_s if backoff_s is not None else BACKOFF_S
    for attempt in range(1, tries + 1):
        try:
            return action()
        except DBAPIError as exc:
            if not is_lock_wait(exc):
                raise
            if attempt == tries:
                own = {session_id(conn), *own_sessions}
                blockers = describe_blockers(conn, own)
                reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
                raise LockWaitError(
                    f"{what}: still blocked after {tries} tries of {_wait_s(conn)} each "
                    f"({reason}); nothing was changed by this step. Blocking: {blockers}"
                ) from exc
            log.warning("%s: lock wait timed out (try %d of %d), retrying in %.1f s", what, attempt, tries, pause)
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


def describe_blockers(conn: Connection, own: set[int]) -> str:
    """Every other session that holds a metadata lock or an open transaction, oldest first
    (MySQL: :func:`_mysql_sessions`; PostgreSQL: :func:`_postgres_sessions`)."""
    sessions = _postgres_sessions(conn) if conn.dialect.name == "postgresql" else _mysql_sessions(conn)
    found = [r for sid, r in sessions.items() if sid not in own]
    if not found:
        return "no other session holds a transaction or metadata lock now (the blocker has gone; rerun the task)"
    found.sort(key=lambda r: -(r.get("trx_open_s") or 0))
    return "; ".join(_describe(conn, r) for r in found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")


# Every other session of this database with a transaction open: its last statement (PostgreSQL
# keeps it, even when idle in transaction) and the tables it holds locks on. A user without
# pg_read_all_stats sees other users' statements as "<insufficient privilege>".
_PG_SESSIONS = """
SELECT a.pid AS id, a.usename AS user, COALESCE(host(a.client_addr), 'local') AS host,
       a.state AS command, CAST(EXTRACT(EPOCH FROM now() - a.state_change) AS integer) AS idle_s,
       a.query AS statement, CAST(EXTRACT(EPOCH FROM now() - a.xact_start) AS integer) AS trx_open_s,
       (SELECT string_agg(DISTINCT c.relname, ',') FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE l.pid = a.pid AND l.granted AND c.relkind IN ('r', 'p')) AS tables
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
"""


def _postgres_sessions(conn: Connection) -> dict[int, dict[str, Any]]:
    sessions: dict[int, dict[str, Any]] = {}
    for row in _query(conn, _PG_SESSIONS) or []:
        tables = row.pop("tables")
        sessions[int(row["id"])] = {**row, "tables": set(tables.split(",")) if tables else set()}
    return sessions


def _mysql_sessions(conn: Connection) -> dict[int, dict[str, Any]]:
    """Every session that holds a metadata lock or an open InnoDB transaction.

    MariaDB lists metadata-lock holders in ``information_schema.METADATA_LOCK_INFO`` when its
    plugin is loaded, MySQL in ``performance_schema.metadata_locks``; open InnoDB transactions
    (a plain read in an open transaction is one) are in ``information_schema.INNODB_TRX`` on
    both. The statement is the one running now, else the last one performance_schema kept.
    """
    sessions: dict[int, dict[str, Any]] = {}
    in_transactions = _query(
        conn,
        "SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.COMMAND AS command, p.TIME AS idle_s, "
        "p.INFO AS statement, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS trx_open_s, t.trx_query AS trx_query "
        "FROM information_schema.PROCESSLIST p JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID",
    )
    for row in in_transactions or []:
        sessions[int(row["id"])] = row
    mdl_holders = _mdl_holders(conn)
    for sid, tables in mdl_holders.items():
        holder = sessions.get(sid) or next(
            iter(
                _query(
                    conn,
                    "SELECT ID AS id, USER AS user, HOST AS host, COMMAND AS command, TIME AS idle_s, "
                    "INFO AS statement FROM information_schema.PROCESSLIST WHERE ID = %s",
                    (sid,),
                )
                or []
            ),
            None,
        )
        if holder is not None:
            sessions[sid] = {**holder, "tables": tables}
    return sessions


def _describe(conn: Connection, r: dict[str, Any]) -> str:
    statement = r.get("trx_query") or r.get("statement") or _last_statement(conn, int(r["id"]))
    parts = [f"session {r['id']} ({r['user']}@{r['host']})"]
    if r.get("trx_open_s") is not None:
        parts.append(f"transaction open {r['trx_open_s']} s")
    if r.get("tables"):
        kind = "metadata locks" if conn.dialect.name == "mysql" else "locks"
        parts.append(f"holds {kind} on " + ", ".join(sorted(r["tables"])))
    parts.append(f"{r.get('command')} for {r.get('idle_s')} s")
    unknown = "unknown (performance_schema is off)" if conn.dialect.name == "mysql" else "unknown"
    parts.append(f"last statement: {_short(statement) if statement else unknown}")
    return ", ".join(parts)


def _short(sql: str, limit: int = 200) -> str:
    sql = " ".join(str(sql).split())
    return sql if len(sql) <= limit else sql[: limit - 3] + "..."


def _mdl_holders(conn: Connection) -> dict[int, set[str]]:
    holders: dict[int, set[str]] = {}
    rows = _query(
        conn,
        "SELECT THREAD_ID AS id, TABLE_NAME AS name FROM information_schema.METADATA_LOCK_INFO "
        "WHERE TABLE_NAME <> '' AND LOCK_MODE NOT LIKE '%%INTENTION%%'",
    )
    if rows is None:  # MySQL: performance_schema.metadata_locks (its THREAD_ID is not the session id)
        rows = _query(
            conn,
            "SELECT t.PROCESSLIST_ID AS id, m.OBJECT_NAME AS name FROM performance_schema.metadata_locks m "
            "JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID "
            "WHERE m.OBJECT_TYPE = 'TABLE' AND m.LOCK_STATUS = 'GRANTED'",
        )
    for row in rows or []:
        if row["id"] is not None:
            holders.setdefault(int(row["id"]), set()).add(str(row["name"]))
    return holders


def _last_statement(conn: Connection, session_id: int) -> str | None:
    rows = _query(
        conn,
        "SELECT h.SQL_TEXT AS sql_text FROM performance_schema.events_statements_history h "
        "JOIN performance_schema.threads t ON t.THREAD_ID = h.THREAD_ID "
        "WHERE t.PROCESSLIST_ID = %s ORDER BY h.EVENT_ID DESC LIMIT 1",
        (session_id,),
    )
    return rows[0]["sql_text"] if rows else None


def _query(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]] | None:
    """Rows as dicts, or None where the server lacks the table (a plugin or schema not loaded)."""
    try:
        return [dict(r) for r in conn.exec_driver_sql(sql, params).mappings()]
    except DBAPIError:
        return None
