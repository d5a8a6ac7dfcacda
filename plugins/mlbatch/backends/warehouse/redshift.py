"""Production warehouse: Amazon Redshift through the Data API (the amazon provider's hook).

Implements :class:`~mlbatch.backends.warehouse.base.Warehouse`, as the embedded DuckDB warehouse does, so
the stages do not ask which side they run on:

- :meth:`RedshiftWarehouse.unload` runs ``UNLOAD ... FORMAT AS PARQUET PARALLEL ON MANIFEST
  VERBOSE`` (text from :func:`mlbatch.backends.warehouse.sql.unload_statement`) into a fresh prefix of the
  S3 object store, waits for it, then reads and checks the manifest Redshift wrote;
- :meth:`RedshiftWarehouse.replace_day` deletes a day of an export table and ``COPY``\\ s the
  day's parquet files in, as ONE Data API batch (``batch_execute_statement`` runs its
  statements as a single transaction): a reader never sees the day half-replaced;
- :meth:`count_day` and :meth:`latest_day` read back with bound parameters.

Why the Data API (``RedshiftDataHook``) and not ``RedshiftSQLHook``: workers need no network
path into the cluster's VPC, authentication is IAM (the Airflow AWS connection, or a Secrets
Manager secret) rather than a database password, and statements are asynchronous: an UNLOAD of
many minutes is polled instead of holding a socket open. The price is polling latency (seconds),
irrelevant for statements that run for minutes.

Configuration: ``MLBATCH_WAREHOUSE=redshift://<airflow_conn_id>`` names an AWS connection; its
extras (or the environment, which wins) give ``cluster_identifier`` *or* ``workgroup_name``,
``database``, optionally ``db_user`` / ``secret_arn``, and ``iam_role`` (the role Redshift
assumes to write and read S3; ``MLBATCH_REDSHIFT_IAM_ROLE``).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import time
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlbatch.backends.store import ObjectStore, StoreError, filesystem_for
from mlbatch.backends.warehouse.base import check_unload_prefix
from mlbatch.backends.warehouse.errors import RedshiftStatementError, UnloadError
from mlbatch.backends.warehouse.manifest import UNLOAD_MAX_FILE_MB, Manifest
from mlbatch.backends.warehouse.sql import unload_statement

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook

log = logging.getLogger(__name__)

_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_RUNNING = {"SUBMITTED", "PICKED", "STARTED"}

# Environment variable -> connection extra; the environment wins.
_SETTINGS = {
    "MLBATCH_REDSHIFT_CLUSTER": "cluster_identifier",
    "MLBATCH_REDSHIFT_WORKGROUP": "workgroup_name",
    "MLBATCH_REDSHIFT_DATABASE": "database",
    "MLBATCH_REDSHIFT_DB_USER": "db_user",
    "MLBATCH_REDSHIFT_SECRET_ARN": "secret_arn",
    "MLBATCH_REDSHIFT_IAM_ROLE": "iam_role",
}


@dataclass(frozen=True)
class RedshiftConfig:
    """Where statements run; never holds a password (IAM or a Secrets Manager ARN)."""

    database: str
    iam_role: str
    cluster_identifier: str | None = None
    workgroup_name: str | None = None
    db_user: str | None = None
    secret_arn: str | None = None

    def __post_init__(self) -> None:
        if (self.cluster_identifier is None) == (self.workgroup_name is None):
            raise ValueError(
                "Redshift: set exactly one of cluster_identifier (MLBATCH_REDSHIFT_CLUSTER) and "
                "workgroup_name (MLBATCH_REDSHIFT_WORKGROUP), in the connection's extras or the environment"
            )

    @classmethod
    def resolve(cls, extras: dict[str, Any]) -> RedshiftConfig:
        values = {field: os.environ.get(var) or extras.get(field) for var, field in _SETTINGS.items()}
        missing = [f"{f} ({v})" for v, f in _SETTINGS.items() if f in ("database", "iam_role") and not values[f]]
        if missing:
            raise ValueError(f"Redshift: missing {', '.join(missing)} in the connection's extras or the environment")
        return cls(**{k: v for k, v in values.items() if v})


class RedshiftWarehouse:
    """Redshift behind the Data API. ``hook`` is for tests (a hook whose client is stubbed)."""

    def __init__(
        self,
        conn_id: str,
        *,
        config: RedshiftConfig | None = None,
        hook: RedshiftDataHook | None = None,
        poll_interval: float = 5.0,
        timeout: float = 6 * 3600,
    ):
        self.conn_id = conn_id
        self._config, self._hook = config, hook
        self.poll_interval, self.timeout = poll_interval, timeout

    @classmethod
    def from_url(cls, url: str) -> RedshiftWarehouse:
        """``redshift://<airflow_conn_id>`` (the value of ``MLBATCH_WAREHOUSE``)."""
        conn_id = url.removeprefix("redshift://").strip("/")
        if not conn_id or "/" in conn_id:
            raise ValueError(f"MLBATCH_WAREHOUSE={url!r}: expected redshift://<airflow_conn_id>")
        return cls(conn_id)

    @property
    def hook(self) -> RedshiftDataHook:
        if self._hook is None:
            # The amazon provider (about 1.5 s to import): `mlbatch sql` imports this module for its SQL only.
            from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook

            self._hook = RedshiftDataHook(aws_conn_id=self.conn_id)
        return self._hook

    @property
    def config(self) -> RedshiftConfig:
        if self._config is None:
            self._config = RedshiftConfig.resolve(dict(self.hook.conn_config.extra_config or {}))
        return self._config

    # -- statements ---------------------------------------------------------------------------

    def _target(self) -> dict[str, Any]:
        c = self.config
        return {
            "database": c.database,
            "cluster_identifier": c.cluster_identifier,
            "workgroup_name": c.workgroup_name,
            "db_user": c.db_user,
            "secret_arn": c.secret_arn,
        }

    def run(self, sql: str | list[str], parameters: dict[str, str] | None = None) -> str:
        """Submit a statement (or a list: one transaction) and wait for it; return its id."""
        statement_id = self.submit(sql, parameters)
        try:
            self.wait(statement_id, "; ".join(sql) if isinstance(sql, list) else sql)
        except KeyboardInterrupt:
            self.cancel(statement_id)
            raise
        return statement_id

    def submit(self, sql: str | list[str], parameters: dict[str, str] | None = None) -> str:
        """Submit a statement (or a list: one transaction) without waiting; return its id."""
        params = [{"name": k, "value": v} for k, v in (parameters or {}).items()] or None
        out = self.hook.execute_query(sql, parameters=params, wait_for_completion=False, **self._target())
        log.info("Redshift statement %s submitted", out.statement_id)
        return out.statement_id

    def cancel(self, statement_id: str) -> None:
        """CancelStatement (Airflow's on_kill): an UNLOAD or COPY stops instead of writing on."""
        try:
            answer = self.hook.conn.cancel_statement(Id=statement_id)
        except Exception as exc:  # finished meanwhile, or already cancelled: nothing left to stop
            log.warning("Redshift statement %s could not be cancelled: %s", statement_id, exc)
            return
        log.info("Redshift statement %s cancelled: %s", statement_id, answer.get("Status"))

    def trigger(self, statement_id: str) -> Any:
        """The provider's RedshiftDataTrigger: polls in the triggerer, cancels the statement on kill."""
        # The amazon provider (about 1.5 s to import): `mlbatch sql` imports this module for its SQL only.
        from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger

        return RedshiftDataTrigger(
            statement_id=statement_id,
            task_id="",  # only used in its error messages; ours name the statement
            poll_interval=int(max(self.poll_interval, 1)),
            aws_conn_id=self.conn_id,
            cancel_on_kill=True,
        )

    def is_running(self, statement_id: str) -> bool:
        """Whether a statement (e.g. one an earlier task attempt submitted) is still running.

        The Data API forgets statements (24 hours after they end): an id it no longer knows
        names nothing that runs, and a retry starts afresh instead of failing on the lookup."""
        conn = self.hook.conn
        try:
            return conn.describe_statement(Id=statement_id)["Status"] in _RUNNING
        except conn.exceptions.ResourceNotFoundException:
            log.info("Redshift statement %s is unknown to the Data API (expired): not running", statement_id)
            return False

    def statement_seconds(self, statement_id: str) -> float | None:
        """The Data API's own ``Duration`` of the statement (nanoseconds): warehouse time, not
        the polling around it."""
        conn = self.hook.conn
        try:
            duration = conn.describe_statement(Id=statement_id).get("Duration")
        except conn.exceptions.ResourceNotFoundException:
            return None
        return duration / 1e9 if isinstance(duration, int) and duration >= 0 else None

    def check_event(self, event: dict[str, Any] | None, what: str) -> None:
        """A RedshiftDataTrigger's event: success, or raise with Redshift's error.

        The trigger's failure message is the provider's dump of the whole DescribeStatement
        response, and an error of the trigger's own polling reads the same: the statement is
        described again here, so a FINISHED one is a success and a failed one raises with FAILED
        or ABORTED and Redshift's own text (the event's message when that call fails too)."""
        if event is None or event.get("status") == "success":
            return
        statement_id = str(event.get("statement_id", "?"))
        status, error = str(event.get("type") or event.get("status") or "failed").upper(), str(event.get("message"))
        try:
            desc = self.hook.conn.describe_statement(Id=statement_id)
        except Exception as exc:  # the event alone still names the statement and says it failed
            log.warning("Redshift statement %s: could not describe it after a failed wait: %s", statement_id, exc)
            raise RedshiftStatementError(statement_id, status, error, what) from None
        if desc["Status"] == "FINISHED":  # the trigger's polling failed (e.g. the network), not the statement
            log.warning("Redshift statement %s FINISHED although its trigger reported: %s", statement_id, error)
            return
        raise RedshiftStatementError(statement_id, desc["Status"], _statement_error(desc) or error, what)

    def wait(self, statement_id: str, sql: str = "") -> dict[str, Any]:
        """Poll ``describe_statement`` until it finishes; FAILED/ABORTED raise with Redshift's error."""
        deadline = time.monotonic() + self.timeout
        while True:
            desc: dict[str, Any] = self.hook.conn.describe_statement(Id=statement_id)  # the Data API's JSON
            status = desc["Status"]
            if status == "FINISHED":
                return desc
            if status not in _RUNNING:
                raise RedshiftStatementError(statement_id, status, _statement_error(desc) or "no error message", sql)
            if time.monotonic() > deadline:
                self.cancel(statement_id)  # it may end meanwhile: a refused cancel is logged, not raised
                raise RedshiftStatementError(
                    statement_id, "TIMED OUT", f"still {status} after {self.timeout:.0f} s", sql
                )
            log.debug("Redshift statement %s is %s", statement_id, status)
            time.sleep(self.poll_interval)

    def query_value(self, sql: str, parameters: dict[str, str] | None = None) -> Any:
        """The single value of a one-row, one-column query (None for SQL NULL)."""
        statement_id = self.run(sql, parameters)
        records = self.hook.conn.get_statement_result(Id=statement_id)["Records"]
        if len(records) != 1 or len(records[0]) != 1:
            raise RedshiftStatementError(statement_id, "FINISHED", f"expected one value, got {records!r}", sql)
        field = records[0][0]
        return None if field.get("isNull") else next(iter(field.values()))

    # -- the warehouse interface ----------------------------------------------------------------

    def unload(self, query: str, store: ObjectStore, prefix: str, *, max_file_size_mb: int = UNLOAD_MAX_FILE_MB) -> str:
        """UNLOAD ``query`` to ``store``/``prefix`` (fresh, S3); return the manifest URI."""
        statement_id = self.start_unload(query, store, prefix, max_file_size_mb=max_file_size_mb)
        try:
            self.wait(statement_id, "UNLOAD")
        except KeyboardInterrupt:
            self.cancel(statement_id)
            raise
        return self.finish_unload(store, prefix, statement_id)

    def start_unload(
        self, query: str, store: ObjectStore, prefix: str, *, max_file_size_mb: int = UNLOAD_MAX_FILE_MB
    ) -> str:
        """Check the prefix is fresh and submit the UNLOAD; return its statement id (no waiting)."""
        if store.is_local or not store.root.startswith("s3://"):
            raise UnloadError(f"Redshift unloads to S3 only; the object store is {store.root}")
        check_unload_prefix(store, prefix)
        sql = unload_statement(
            query,
            s3_prefix=store.uri(prefix),
            iam_role=self.config.iam_role,
            max_file_size_mb=max_file_size_mb,
        )
        return self.submit(sql)

    def finish_unload(self, store: ObjectStore, prefix: str, statement_id: str | None) -> str:
        """After the UNLOAD finished: read and check the manifest Redshift wrote; return its URI."""
        s3_prefix = store.uri(prefix)
        manifest_uri = store.uri(prefix + "manifest")
        try:
            manifest = Manifest.parse(store.get_bytes(prefix + "manifest"), source=manifest_uri)
        except StoreError as exc:
            raise UnloadError(f"UNLOAD {statement_id} finished but wrote no readable manifest: {exc}") from exc
        outside = [e.url for e in manifest.entries if not e.url.startswith(s3_prefix)]
        if outside:
            raise UnloadError(f"{manifest_uri} lists parts outside {s3_prefix}: {outside[:3]}")
        if not manifest.schema_.elements:
            raise UnloadError(f"{manifest_uri} has no schema (was the UNLOAD run with MANIFEST VERBOSE?)")
        log.info(
            "UNLOAD %s: %d rows in %d parts under %s",
            statement_id,
            manifest.record_count,
            len(manifest.entries),
            s3_prefix,
        )
        return manifest_uri

    def replace_day(self, table: str, ds: str, uris: list[str], store: ObjectStore) -> int:
        """Replace one ``ds`` of ``table`` with the parquet files ``uris`` in one transaction."""
        statement_id = self.start_replace_day(table, ds, uris, store)
        try:
            self.wait(statement_id, f"replace {table} ds={ds}")
        except KeyboardInterrupt:
            self.cancel(statement_id)
            raise
        return self.finish_replace_day(table, ds, statement_id)

    def start_replace_day(self, table: str, ds: str, uris: list[str], store: ObjectStore) -> str:
        """Submit the DELETE of the day + COPY of ``uris`` as one transaction; return its statement id.

        ``COPY`` loads every object under a prefix, so the files must be exactly what their
        folder holds: anything else there would be loaded too, and is an error here instead.
        """
        _check_table(table)
        day = date.fromisoformat(ds).isoformat()
        folders = {posixpath.dirname(u) + "/" for u in uris}
        if len(folders) != 1 or not uris:
            raise ValueError(f"replace_day({table}, {day}): expected files in one folder, got {uris}")
        (folder,) = folders
        if not folder.startswith("s3://"):
            raise ValueError(f"replace_day({table}, {day}): Redshift COPY reads S3 only, got {folder}")
        present = {store.uri(k) for k in store.list(store.key(folder))}
        if present != set(uris):
            raise ValueError(
                f"replace_day({table}, {day}): {folder} holds {sorted(present - set(uris))} besides the "
                f"day's files (COPY would load them too) or lacks {sorted(set(uris) - present)}"
            )
        fs, path = filesystem_for(uris[0])

        with fs.open_input_file(path) as f:
            key_type = pq.read_schema(f).field("entity_key").type
        sqls = replace_day_statements(
            table, day, folder, self.config.iam_role, "BIGINT" if pa.types.is_integer(key_type) else "VARCHAR(256)"
        )
        return self.submit(sqls)

    def finish_replace_day(self, table: str, ds: str, statement_id: str | None) -> int:
        """After the replacing batch finished: the day's row count in the warehouse."""
        return self.count_day(table, ds)

    def count_day(self, table: str, ds: str) -> int:
        _check_table(table)
        if not self._has_table(table):
            return 0
        return int(self.query_value(f"SELECT COUNT(*) FROM {table} WHERE ds = CAST(:ds AS DATE)", {"ds": ds}))

    def latest_day(self, table: str) -> str | None:
        _check_table(table)
        if not self._has_table(table):
            return None
        latest = self.query_value(f"SELECT CAST(MAX(ds) AS VARCHAR) FROM {table}")
        return str(latest) if latest is not None else None

    def _has_table(self, table: str) -> bool:
        schema_name, name = table.split(".")
        found = self.query_value(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = :schema AND table_name = :name",
            {"schema": schema_name, "name": name},
        )
        return int(found) > 0


def _statement_error(desc: dict[str, Any]) -> str:
    """Redshift's error of a described statement: a batch repeats its failed sub-statement's."""
    errors = [desc.get("Error")] + [s.get("Error") for s in desc.get("SubStatements", [])]
    return "; ".join(dict.fromkeys(e for e in errors if e))


def _check_table(table: str) -> None:
    # Table names are pasted into SQL (they cannot be bound): only schema.table of [a-z0-9_].
    if not _TABLE.match(table):
        raise ValueError(f"table {table!r} must be schema.table in lower-case letters, digits and '_'")


def replace_day_statements(table: str, ds: str, s3_folder: str, iam_role: str, key_type: str = "BIGINT") -> list[str]:
    """The Data API batch that replaces a day: one transaction (``batch_execute_statement``)."""
    _check_table(table)
    day = date.fromisoformat(ds).isoformat()  # validated: the only value pasted into the text
    if "'" in s3_folder or "'" in iam_role:
        raise ValueError("quotes are not allowed in an S3 folder or an IAM role")
    return [
        f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}",
        f"CREATE TABLE IF NOT EXISTS {table} (entity_key {key_type} NOT NULL, ds DATE NOT NULL, "
        "model_version VARCHAR(64) NOT NULL, label VARCHAR(256) NOT NULL, score DOUBLE PRECISION NOT NULL)",
        f"DELETE FROM {table} WHERE ds = '{day}'",
        f"COPY {table} FROM '{s3_folder}' IAM_ROLE '{iam_role}' FORMAT AS PARQUET",
    ]
