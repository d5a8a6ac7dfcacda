"""Which app DB backend stands behind a URL: one strategy per SQLAlchemy backend name.

:data:`BACKENDS` maps the backend name of the app DB's URL (the scheme before any ``+driver``:
``sqlite``, ``mysql``, ``postgresql``) to an :class:`AppDbBackend`, which owns the little that
differs between them: how an engine is made, the guarded upsert, and the publisher
(:mod:`mlbatch.backends.appdb.publisher`). The hook, ``mlbatch.backends.env`` and the publish ask
:func:`backend_for` and never branch on a dialect themselves; adding a backend is one class and
one entry here.

=================  ===========================================  =======================================
URL                backend                                      publisher
=================  ===========================================  =======================================
``sqlite:///``     SQLite (the embedded stack)                  :mod:`mlbatch.backends.appdb.sqlite_publish`
``mysql://``       Aurora MySQL 3, MariaDB 10.11 (PyMySQL)      :mod:`mlbatch.backends.appdb.mysql_publish`
``postgresql://``  Aurora PostgreSQL, PostgreSQL (psycopg2)     :mod:`mlbatch.backends.appdb.postgres_publish`
=================  ===========================================  =======================================

A URL without a driver (``mysql://``, ``postgresql://``) gets the driver the deployable set pins
(``requirements/airflow.txt``): PyMySQL, psycopg2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Connection, Engine, Table, create_engine, event, func
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.dml import Insert

from mlbatch.errors import UsageError
from mlbatch.redaction import redact

if TYPE_CHECKING:
    from mlbatch.backends.appdb.publisher import AppDb, Publisher
    from mlbatch.backends.store import ObjectStore


class AppDbConfigError(UsageError, ValueError):
    """The app DB's settings name a backend mlbatch has no strategy for (the message lists those it
    has), or ask a backend for what only another one does."""


class AppDbBackend:
    """What differs between app DB backends. ``name`` is SQLAlchemy's backend name (the URL's
    scheme before ``+``), ``driver`` the DBAPI driver a URL without one gets."""

    name: ClassVar[str]
    driver: ClassVar[str]
    label: ClassVar[str]  # for messages: what this backend stands for

    def url(self, url: str | URL) -> URL:
        """``url`` with this backend's driver when it names none (``mysql://`` → ``mysql+pymysql://``)."""
        parsed = make_url(url)
        return parsed if "+" in parsed.drivername else parsed.set(drivername=f"{self.name}+{self.driver}")

    def connect_args(self) -> dict[str, Any]:
        """The driver's connect arguments every session of this backend gets (a connection's extras win)."""
        return {}

    def engine(self, hook: AppDb) -> Engine:
        """The hook's pooled engine for every session but the publish's."""
        return hook.server_engine(pool_pre_ping=True, pool_recycle=3600)

    def upsert(self, table: Table, update: Sequence[str], newer_than: str | None) -> Insert:
        """An INSERT of rows into ``table`` that updates ``update`` on a primary-key clash; with
        ``newer_than`` (a column), only where the new row's value there is the same or greater."""
        raise NotImplementedError

    def publisher(self, hook: AppDb, load_from: ObjectStore | None) -> Publisher:
        """How a day is published on this backend; ``load_from`` is the object store Aurora MySQL's
        ``LOAD DATA FROM S3`` stages the day in (``MLBATCH_AURORA_LOAD_FROM_S3=1``), else None."""
        raise NotImplementedError


def _on_conflict(insert: Any, table: Table, update: Sequence[str], newer_than: str | None) -> Insert:
    """SQLite's and PostgreSQL's ``INSERT ... ON CONFLICT (pk) DO UPDATE ... WHERE``: both take the
    same construct; the assignments see the old row, so their order does not matter."""
    stmt = insert(table)
    pk = [c.name for c in table.primary_key.columns]
    where = None if newer_than is None else stmt.excluded[newer_than] >= table.c[newer_than]
    assignments = {c: stmt.excluded[c] for c in update}
    upsert: Insert = stmt.on_conflict_do_update(index_elements=pk, set_=assignments, where=where)
    return upsert


class SqliteBackend(AppDbBackend):
    name, driver, label = "sqlite", "pysqlite", "SQLite (the embedded stack)"

    def engine(self, hook: AppDb) -> Engine:
        url = make_url(hook.url)
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers (status) never block the writer
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is lazy).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            # Take the write lock at BEGIN, so two writers queue instead of deadlocking.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def upsert(self, table: Table, update: Sequence[str], newer_than: str | None) -> Insert:
        return _on_conflict(sqlite.insert, table, update, newer_than)

    def publisher(self, hook: AppDb, load_from: ObjectStore | None) -> Publisher:
        # Imported when chosen (so is every publisher): each pulls in pyarrow and its load path,
        # which a process that never publishes (the CLI's label and registry commands) skips.
        from mlbatch.backends.appdb.sqlite_publish import SqlitePublisher

        return SqlitePublisher(hook)  # the embedded stack has no S3 load: MLBATCH_AURORA_LOAD_FROM_S3 is moot


class MySqlBackend(AppDbBackend):
    name, driver, label = "mysql", "pymysql", "Aurora MySQL / MariaDB"

    def connect_args(self) -> dict[str, Any]:
        return {"charset": "utf8mb4"}

    def engine(self, hook: AppDb) -> Engine:
        return hook.mysql_engine(local_files=False, pool_pre_ping=True, pool_recycle=3600)

    def upsert(self, table: Table, update: Sequence[str], newer_than: str | None) -> Insert:
        stmt = mysql.insert(table)
        new = stmt.inserted  # renders VALUES(col): MySQL 8.0 and MariaDB 10.11 both take it
        if newer_than is None:
            return stmt.on_duplicate_key_update([(c, new[c]) for c in update])
        fresh = new[newer_than] >= table.c[newer_than]
        # MySQL applies assignments left to right: the guard column goes last so the others
        # still compare against the old value.
        ordered = [c for c in update if c != newer_than] + [newer_than]
        return stmt.on_duplicate_key_update([(c, func.if_(fresh, new[c], table.c[c])) for c in ordered])

    def publisher(self, hook: AppDb, load_from: ObjectStore | None) -> Publisher:
        # Chosen at run time: a publisher (and its load path) loads only when its backend publishes.
        from mlbatch.backends.appdb.mysql_publish import MySqlPublisher

        return MySqlPublisher(hook, load_from=load_from)


class PostgresBackend(AppDbBackend):
    name, driver, label = "postgresql", "psycopg2", "Aurora PostgreSQL / PostgreSQL"

    def connect_args(self) -> dict[str, Any]:
        # Named in pg_stat_activity, so a blocked publish (and an operator) can tell our sessions apart.
        return {"application_name": "mlbatch"}

    def upsert(self, table: Table, update: Sequence[str], newer_than: str | None) -> Insert:
        return _on_conflict(postgresql.insert, table, update, newer_than)

    def publisher(self, hook: AppDb, load_from: ObjectStore | None) -> Publisher:
        if load_from is not None:
            raise AppDbConfigError(
                f"app DB {redact(hook.url)}: MLBATCH_AURORA_LOAD_FROM_S3=1 is Aurora MySQL's LOAD DATA FROM S3; "
                "the PostgreSQL publisher streams the day from the worker with COPY FROM STDIN: unset it"
            )
        # Chosen at run time: a publisher (and its load path) loads only when its backend publishes.
        from mlbatch.backends.appdb.postgres_publish import PostgresPublisher

        return PostgresPublisher(hook)


# SQLAlchemy backend name (the app DB URL's scheme before "+") -> its strategy.
BACKENDS: dict[str, AppDbBackend] = {b.name: b for b in (SqliteBackend(), MySqlBackend(), PostgresBackend())}


def backend_for(url: str | URL) -> AppDbBackend:
    """The backend of an app DB URL; an unknown one is an error that lists the known schemes."""
    try:
        name = make_url(url).get_backend_name()
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's ArgumentError for text that is no URL at all
        raise AppDbConfigError(f"app DB URL {redact(str(url))!r} is not a URL ({exc})") from None
    backend = BACKENDS.get(name)
    if backend is None:
        known = ", ".join(f"{b.name}:// ({b.label})" for b in BACKENDS.values())
        raise AppDbConfigError(f"app DB {redact(str(url))}: backend {name!r} is not one of {known}")
    return backend
