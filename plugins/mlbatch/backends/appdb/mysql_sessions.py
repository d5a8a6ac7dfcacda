"""The sessions of one MySQL publish, and how another thread (or a signal handler) stops them.

A publish runs in the worker: one session holds the model's named lock (``GET_LOCK``) and runs
the DDL and the upsert transaction; others load key ranges (and, with ``commit: key_range``,
upsert them). Stopping the Airflow task (mark failed, clear, ``execution_timeout``, SIGTERM)
ends the worker's process, not its statements: an ``INSERT ... SELECT`` runs on in the server,
holding the model's lock, and the retry waits for that lock and fails. So every session records
its connection id (``CONNECTION_ID()``) while it runs, and :meth:`PublishSessions.stop` (the
task's ``on_kill``) opens a session of its own and

1. runs ``KILL QUERY <id>`` for each: the running statement ends, and the publish's own clean-up
   runs (the transaction rolled back, the partition exchanged back, the lock released);
2. after ``grace_s``, ``KILL <id>`` for each session still open (in a signal handler the main
   thread cannot clean up until the handler returns): the server ends the session, rolls back
   its transaction and frees its named lock.

A session that ends by an exception (a timeout raised in the worker mid-statement, any error) is
killed the same way on its way out: its connection may be in the middle of a statement the
server still runs. Once stopped, no new session opens (:class:`PublishStopped`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from mlbatch.backends.appdb import locks
from mlbatch.backends.appdb.mysql_sql import LOCK_TIMEOUT_S
from mlbatch.backends.appdb.publisher import PublishError, PublishStopped

if TYPE_CHECKING:
    from mlbatch.backends.appdb.publisher import AppDb

log = logging.getLogger(__name__)

# The killing session's connect/read/write timeout: on_kill has 5 s before SIGKILL.
KILL_TIMEOUT_S = 2
GRACE_S = 1.0  # how long KILL QUERY's clean-up may take before the sessions are killed
UNKNOWN_THREAD = 1094  # ER_NO_SUCH_THREAD: the session had ended already


class PublishSessions:
    """The sessions of one publish: opened on ``db``'s publish engine (``local_files``: LOAD
    DATA LOCAL INFILE; Aurora's FROM S3 needs none), known by their connection ids while open.
    ``load_role``: the role a ``LOAD DATA FROM S3`` session activates first (``SET ROLE``)."""

    def __init__(self, db: AppDb, *, local_files: bool = True, load_role: str | None = None):
        self.db, self.load_role = db, load_role
        self.engine = db.publish_engine if local_files else db.engine
        self._open: dict[int, str] = {}  # connection id -> the thread using it
        # Re-entrant: stop() may run in a signal handler on the main thread while that thread holds it.
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self.stopped_by: str | None = None  # why stop() was first called: "on_kill", "interrupted"
        # Made now, not in stop(): stop() may run in a signal handler that interrupted the main
        # thread anywhere, even inside a pool's lock; a NullPool engine shares no lock with it.
        self._killer = db.mysql_engine(
            local_files=False,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": KILL_TIMEOUT_S,
                "read_timeout": KILL_TIMEOUT_S,
                "write_timeout": KILL_TIMEOUT_S,
            },
        )

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def ids(self) -> list[int]:
        """Connection ids of the sessions open now."""
        with self._lock:
            return list(self._open)

    def check(self, what: str) -> None:
        """Raise :class:`PublishStopped` once :meth:`stop` was called (between two steps)."""
        if self._stopped.is_set():
            raise PublishStopped(f"the publish was stopped before {what}; nothing after it ran")

    @contextmanager
    def open(self) -> Iterator[Connection]:
        """An autocommit session with short lock waits (:func:`locks.short_waits`), known by id
        until it ends; killed on its way out if it ends by an exception."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        sid: int | None = None
        clean = False
        try:
            sid = locks.session_id(conn)
            with self._lock:
                if self._stopped.is_set():  # checked under the lock stop() takes: no session escapes it
                    raise PublishStopped(f"the publish was stopped; session {sid} not used")
                self._open[sid] = threading.current_thread().name
            # Tables created before schema.py set autoincrement=False on entity_key have an
            # AUTO_INCREMENT key (and CREATE TABLE LIKE copies it): without this mode a key of 0
            # would be replaced by a generated id and clash with a real one.
            conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
            locks.short_waits(conn)
            yield conn
            clean = True
        finally:
            with self._lock:
                if sid is not None:  # None: it failed before its id was known
                    self._open.pop(sid, None)
            if not clean and sid is not None:
                self._kill([sid], "KILL")  # its statement may still run on the server
                conn.invalidate()  # never back into the pool: the session is gone
            conn.close()

    def stop(self, grace_s: float = GRACE_S, *, why: str = "on_kill") -> list[int]:
        """Stop the publish: KILL QUERY its open sessions, then KILL those still open after
        ``grace_s``; no session opens afterwards. Returns the ids found open. Returns within
        about ``grace_s`` plus a few ``KILL_TIMEOUT_S``, whatever the server does."""
        with self._lock:
            if not self._stopped.is_set():
                self.stopped_by = why
            self._stopped.set()
            running = list(self._open)
        if not running:
            return []
        log.warning("stopping the publish: KILL QUERY of its app DB sessions %s", running)
        self._kill(running, "KILL QUERY")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._still_open(running):
            time.sleep(0.05)
        left = self._still_open(running)
        if left:
            log.warning("stopping the publish: KILL of the sessions still open after %.1f s: %s", grace_s, left)
            self._kill(left, "KILL")
        return running

    def _still_open(self, ids: Sequence[int]) -> list[int]:
        with self._lock:
            return [i for i in ids if i in self._open]

    def _kill(self, ids: Sequence[int], how: str) -> None:
        """``KILL QUERY`` or ``KILL`` each session, from a session of its own; never raises (it
        runs in on_kill and on the way out of a failed session: the first error must show)."""
        try:
            with self._killer.connect() as side:
                for sid in ids:
                    try:
                        side.exec_driver_sql(f"{how} %s", (int(sid),))
                    except Exception as exc:  # noqa: BLE001 - the next id must still be killed
                        if locks.error_code(exc) != UNKNOWN_THREAD:
                            log.warning("app DB session %s: %s failed: %s", sid, how, exc)
        except Exception as exc:  # noqa: BLE001 - no session to kill from: say what may still run
            log.warning(
                "could not %s the publish's app DB sessions %s (%s); they may still run and hold the model's "
                "lock until the server ends them: see SHOW PROCESSLIST",
                how,
                list(ids),
                exc,
            )

    def dispose(self) -> None:
        self._killer.dispose()


@contextmanager
def named_lock(conn: Connection, name: str, timeout_s: int = LOCK_TIMEOUT_S) -> Iterator[None]:
    """A MySQL named lock for this session; the server frees it if the session dies."""
    got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, timeout_s)).scalar()
    if got != 1:
        raise PublishError(f"could not take the app DB lock {name!r} within {timeout_s} s (another publish holds it)")
    try:
        yield
    finally:
        # A broken session (killed, or interrupted mid-statement by a timeout) cannot release it:
        # its end frees the lock, and this error must not hide the one that broke it.
        with suppress(Exception):
            conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))
