"""The app database hook: owns the connection and the dialect, nothing else.

Aurora MySQL 8 or Aurora PostgreSQL in production, MariaDB 10.11 and PostgreSQL in tests, SQLite
in the embedded stack. Everything above this hook (label sync, registry, publish) is the same
code on each; the little that differs by backend (how an engine is made, the guarded upsert, the
publisher) is the backend's strategy (:mod:`mlbatch.backends.appdb.backends`), built with SQLAlchemy's
dialect constructs, with bound parameters and quoted identifiers only.

Credentials: in Airflow, an Airflow connection (``MLBATCH_APPDB_CONN_ID``, see
:mod:`mlbatch.backends.appdb.connection`: TLS and IAM auth from its extras); for the CLI and tests, a
URL (``MLBATCH_APPDB_URL``) with the password in it or in ``MLBATCH_APPDB_PASSWORD``.

MySQL sessions read no client files (``local_infile`` off), except the publish's
(:attr:`AppDbHook.publish_engine`), which stream the day with ``LOAD DATA LOCAL INFILE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, event, inspect
from sqlalchemy.engine import URL

from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.backends import AppDbBackend, backend_for
from mlbatch.backends.appdb.connection import LOAD_ROLE_ENV, AppDbSettings, PasswordSource, from_connection
from mlbatch.redaction import redact


class AppDbHook:
    def __init__(
        self,
        url: str | URL,
        *,
        connect_args: dict[str, Any] | None = None,
        password: PasswordSource | None = None,
        load_role: str | None = None,
    ):
        # ``url`` may carry a password (CLI, tests); ``password`` supplies it at each connect instead
        # (a connection's password or a fresh IAM token), so it is never part of the URL.
        self.url = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        self.backend: AppDbBackend = backend_for(self.url)  # an unknown scheme fails here, named
        self.connect_args = dict(connect_args or {})
        self.password = password
        self._load_role = load_role
        self._engine: Engine | None = None
        self._publish_engine: Engine | None = None

    @classmethod
    def from_settings(cls, settings: AppDbSettings) -> AppDbHook:
        return cls(
            settings.url, connect_args=settings.connect_args, password=settings.password, load_role=settings.load_role
        )

    @classmethod
    def from_connection(cls, conn_id: str) -> AppDbHook:
        """The hook for the Airflow connection ``conn_id`` (mysql or postgres type; TLS and IAM from extras)."""
        return cls.from_settings(from_connection(conn_id))

    @property
    def dialect(self) -> str:
        """SQLAlchemy's backend name: ``sqlite``, ``mysql`` or ``postgresql``."""
        return self.backend.name

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        return self.backend.engine(self)

    @property
    def publish_engine(self) -> Engine:
        """MySQL: the engine of the publish's sessions: like :attr:`engine`, plus ``local_infile``
        (the day is streamed with ``LOAD DATA LOCAL INFILE``). No other session may read client
        files: a statement anywhere else that asked the driver for a local file would be refused."""
        if self._publish_engine is None:
            self._publish_engine = self.mysql_engine(local_files=True, pool_pre_ping=True, pool_recycle=3600)
        return self._publish_engine

    def server_engine(self, *, connect_args: dict[str, Any] | None = None, **kwargs: Any) -> Engine:
        """An engine on this hook's URL and credentials for a server backend (MySQL, PostgreSQL):
        the backend's connect arguments, then the connection's (TLS), then ``connect_args`` (e.g.
        short timeouts); ``kwargs`` go to :func:`create_engine` (e.g. a pool)."""
        url = self.backend.url(self.url)
        if url.password is None and self.password is None and os.environ.get("MLBATCH_APPDB_PASSWORD"):
            url = url.set(password=os.environ["MLBATCH_APPDB_PASSWORD"])
        args = {**self.backend.connect_args(), **self.connect_args, **(connect_args or {})}
        engine = create_engine(url, connect_args=args, **kwargs)
        if self.password is not None:
            source = self.password

            @event.listens_for(engine, "do_connect")
            def _password(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
                cparams["password"] = source()  # an IAM token is made fresh for each connection

        return engine

    def mysql_engine(self, *, local_files: bool, connect_args: dict[str, Any] | None = None, **kwargs: Any) -> Engine:
        """A MySQL engine on this hook's URL and credentials; ``local_files`` lets the server ask
        the driver for client files (LOAD DATA LOCAL INFILE). ``connect_args`` add PyMySQL
        arguments (e.g. short timeouts), ``kwargs`` go to :func:`create_engine` (e.g. a pool)."""
        return self.server_engine(connect_args={**(connect_args or {}), "local_infile": local_files}, **kwargs)

    @property
    def load_role(self) -> str | None:
        """The role each ``LOAD DATA FROM S3`` session activates first (``SET ROLE``): the
        connection's extra ``aurora_load_role``, else ``MLBATCH_AURORA_LOAD_ROLE``; None: none."""
        return self._load_role or os.environ.get(LOAD_ROLE_ENV) or None

    def __repr__(self) -> str:
        return f"AppDbHook({redact(self.url)})"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.engine.begin() as conn:
            yield conn

    def connect(self) -> Connection:
        return self.engine.connect()

    def ensure_schema(self, predictions: Iterable[tuple[str, str]] = ()) -> None:
        """Create the shared tables and each model's predictions table if missing.

        ``predictions`` holds (model name, key type) pairs. Existing tables are left as they are.
        """
        md = MetaData()
        for table in schema.metadata.sorted_tables:
            table.to_metadata(md)
        for model, key_type in predictions:
            schema.predictions_table(model, key_type, md)
        md.create_all(self.engine, checkfirst=True)

    def has_table(self, name: str) -> bool:
        return inspect(self.engine).has_table(name)

    def upsert(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[dict[str, Any]],
        *,
        update: Sequence[str],
        newer_than: str | None = None,
    ) -> None:
        """Insert rows; on a primary-key clash update ``update`` columns.

        With ``newer_than`` (a column name), an existing row is replaced only when the new
        row's value in that column is the same or greater: a backfill of an old day never
        overwrites a newer prediction.
        """
        if not rows:
            return
        conn.execute(self.backend.upsert(table, update, newer_than), list(rows))

    def dispose(self) -> None:
        for engine in (self._engine, self._publish_engine):
            if engine is not None:
                engine.dispose()
        self._engine = self._publish_engine = None
