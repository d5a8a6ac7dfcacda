"""Readers never wait: the publish's DDL and transactions wait for locks briefly, then give up loudly.

MySQL's ``lock_wait_timeout`` (metadata locks: DDL, ``EXCHANGE PARTITION``) defaults to a year.
A DDL that waits for an exclusive metadata lock also makes every *new* reader of that table
queue behind it, so one forgotten open transaction of the application would stall all reads for
as long as the publish waits. Every publishing session therefore sets short waits
(:data:`LOCK_WAIT_S`, for metadata locks and InnoDB row locks) and retries a bounded number of
times with backoff; a step still blocked fails the task with the blocking sessions named (id,
user, host, how long its transaction has been open, its last statement), and since each step
is one DDL or one transaction, it leaves the tables as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from mlbatch.errors import StageFailed

log = logging.getLogger(__name__)

LOCK_WAIT_S = 2  # seconds a DDL (or the upsert) waits for a lock before it backs off
ATTEMPTS = 4  # tries of a blocked step: at most about 4 x 2 s waits + 0.5 + 1 + 2 s of backoff
BACKOFF_S = 0.5  # first pause between tries; doubled each time

# ER_LOCK_WAIT_TIMEOUT (metadata and InnoDB row locks alike); ER_LOCK_DEADLOCK is retried too.
LOCK_ERRORS = {1205, 1213}

T = TypeVar("T")


class LockWaitError(StageFailed, RuntimeError):
    """A publish step stayed blocked by another session; the message names it."""


def short_waits(conn: Connection, seconds: int | None = None) -> None:
    """This session waits at most ``seconds`` for a metadata lock or an InnoDB row lock."""
    s = int(seconds if seconds is not None else LOCK_WAIT_S)
    conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {s}, innodb_lock_wait_timeout = {s}")


def session_id(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())


def error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


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
            if error_code(exc) not in LOCK_ERRORS:
                raise
            if attempt == tries:
                own = {session_id(conn), *own_sessions}
                blockers = describe_blockers(conn, own)
                wait_s = conn.exec_driver_sql("SELECT @@SESSION.lock_wait_timeout").scalar()
                raise LockWaitError(
                    f"{what}: still blocked after {tries} tries of {wait_s} s each "
                    f"({exc.orig}); nothing was changed by this step. Blocking: {blockers}"
                ) from exc
            log.warning("%s: lock wait timed out (try %d of %d), retrying in %.1f s", what, attempt, tries, pause)
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


def describe_blockers(conn: Connection, own: set[int]) -> str:
    """Every other session that holds a metadata lock or an open transaction, oldest first.

    MariaDB lists metadata-lock holders in ``information_schema.METADATA_LOCK_INFO`` when its
    plugin is loaded, MySQL in ``performance_schema.metadata_locks``; open InnoDB transactions
    (a plain read in an open transaction is one) are in ``information_schema.INNODB_TRX`` on
    both. The statement is the one running now, else the last one performance_schema kept.
    """
    sessions: dict[int, dict[str, Any]] = {}
    for row in _query(
        conn,
        "SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.COMMAND AS command, p.TIME AS idle_s, "
        "p.INFO AS statement, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS trx_open_s, t.trx_query AS trx_query "
        "FROM information_schema.PROCESSLIST p JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID",
    ):
        sessions[int(row["id"])] = row
    mdl_holders = _mdl_holders(conn)
    for sid, tables in mdl_holders.items():
        row = sessions.get(sid) or next(
            iter(
                _query(
                    conn,
                    "SELECT ID AS id, USER AS user, HOST AS host, COMMAND AS command, TIME AS idle_s, "
                    "INFO AS statement FROM information_schema.PROCESSLIST WHERE ID = %s",
                    (sid,),
                )
            ),
            None,
        )
        if row is not None:
            sessions[sid] = {**row, "tables": tables}
    found = [r for sid, r in sessions.items() if sid not in own]
    if not found:
        return "no other session holds a transaction or metadata lock now (the blocker has gone; rerun the task)"
    found.sort(key=lambda r: -(r.get("trx_open_s") or 0))
    return "; ".join(_describe(conn, r) for r in found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")


def _describe(conn: Connection, r: dict[str, Any]) -> str:
    statement = r.get("trx_query") or r.get("statement") or _last_statement(conn, int(r["id"]))
    parts = [f"session {r['id']} ({r['user']}@{r['host']})"]
    if r.get("trx_open_s") is not None:
        parts.append(f"transaction open {r['trx_open_s']} s")
    if r.get("tables"):
        parts.append("holds metadata locks on " + ", ".join(sorted(r["tables"])))
    parts.append(f"{r.get('command')} for {r.get('idle_s')} s")
    parts.append(f"last statement: {_short(statement) if statement else 'unknown (performance_schema is off)'}")
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
