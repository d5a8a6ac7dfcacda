"""The Redshift Data API at the HTTP wire: a :class:`JsonService` that EXECUTES statements on DuckDB.

Served by :class:`devtools.devservers.aws_wire.AwsEndpoint` (``service_name`` "redshift-data"),
it answers the real boto3 and aiobotocore clients (the provider's ``RedshiftDataHook`` and
``RedshiftDataTrigger``) as the Data API does:

- ``ExecuteStatement`` / ``BatchExecuteStatement`` return an ``Id`` at once; the statement runs in
  a thread of its own (``SUBMITTED`` -> ``STARTED`` -> ``FINISHED`` / ``FAILED`` / ``ABORTED``).
  A batch is ONE transaction, as in Redshift: a failing sub-statement rolls back the others.
- ``DescribeStatement``, ``GetStatementResult`` (records typed ``longValue``/``stringValue``/...),
  ``CancelStatement`` (interrupts the DuckDB statement), ``ListStatements``.
- ``UNLOAD ... FORMAT AS PARQUET [PARALLEL ON] MANIFEST [VERBOSE]`` writes parquet parts (one or
  more per slice) and a manifest in Redshift's format into S3 through a boto3 client at
  ``s3_endpoint``; ``COPY ... FORMAT AS PARQUET [MANIFEST]`` reads objects back from there.
- Privileges: :attr:`grants` (:class:`~devtools.devservers.redshift_sql.Grants`), all granted
  until a test revokes one; ``current_user`` is the statement's ``DbUser``.

Test knobs: :attr:`min_duration` (every statement stays STARTED at least that long, cancellable,
so a test can defer on it or cancel it), :meth:`fail_next` (the next statement, or sub-statement
matching a text, FAILS with a given error), :attr:`history` (every SQL text run and how it ended).

Everything the double needs lives in its own process: the DuckDB file it holds open (no other
process may open it meanwhile: read it through :meth:`query`) and an explicit S3 endpoint, so it
can serve Airflow workers and a triggerer running elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from devtools.devservers import redshift_io
from devtools.devservers.aws_wire import AwsError, JsonService
from devtools.devservers.redshift_io import Cancelled
from devtools.devservers.redshift_sql import (
    PRIVILEGE_UDFS,
    Copy,
    Explain,
    Grants,
    Plain,
    RedshiftSqlError,
    Unload,
    classify,
    translate,
)
from devtools.devservers.redshift_statements import (
    RUNNING,
    Executed,
    Statement,
    Sub,
    column,
    field_value,
    output_problems,
)

log = logging.getLogger(__name__)

_RETURNS_ROWS = ("SELECT", "WITH", "EXPLAIN", "SHOW", "VALUES", "TABLE", "FROM")


class RedshiftDataDouble(JsonService):
    """The Redshift Data API, executing on the DuckDB file ``warehouse_path`` (held open)."""

    service_name = "redshift-data"

    def __init__(
        self,
        warehouse_path: str | Path,
        *,
        endpoint_url: str | None = None,
        s3_endpoint: str | None = None,
        region: str = "us-east-1",
        min_duration: float = 0.0,
        page_rows: int = 1000,
    ):
        """``endpoint_url``: the :class:`AwsEndpoint` serving this double, where UNLOAD and COPY
        reach S3 (``s3_endpoint``, when S3 is served elsewhere, wins)."""
        super().__init__()
        self.warehouse_path = Path(warehouse_path)
        self.s3_endpoint, self.region = s3_endpoint or endpoint_url, region
        self.min_duration, self.page_rows = min_duration, page_rows
        self.grants = Grants()
        self.history: list[Executed] = []
        self._db: duckdb.DuckDBPyConnection | None = None  # opened by the first statement
        self._statements: dict[str, Statement] = {}
        self._faults: list[tuple[str, str | None]] = []
        self._state = threading.Lock()
        self._query_ids = iter(range(100_000, 10**9))
        self._s3: Any = None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for a statement. The file opens at first use, so a test may build
        or read it before (no other connection may hold it while the double does)."""
        with self._state:
            if self._db is None:
                self._db = duckdb.connect(str(self.warehouse_path))
                for udf, name in PRIVILEGE_UDFS.items():  # in the catalog: every cursor sees them
                    fn = getattr(self.grants, udf)
                    self._db.create_function(name, fn, ["VARCHAR"] * 3, "BOOLEAN", side_effects=True)
            return self._db.cursor()

    def handle(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        out = super().handle(operation, params)
        problems = output_problems(self.model.operation_model(operation).output_shape, out)
        if problems:  # a bug in the double: recorded where the tests look (they assert it empty)
            self.invalid.append((operation, "response: " + "; ".join(problems)))
        return out

    # -- test knobs --------------------------------------------------------------------------

    def fail_next(self, error: str, match: str | None = None) -> None:
        """The next SQL text containing ``match`` (any SQL when None) FAILS with ``error``."""
        with self._state:
            self._faults.append((error, match))

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[tuple]:
        """Rows of a DuckDB query on the double's file (tests read the warehouse through this)."""
        cursor = self._cursor()
        try:
            return cursor.execute(sql, params or []).fetchall()
        finally:
            cursor.close()

    def executed(self, status: str | None = None) -> list[str]:
        """The SQL texts run so far (with ``status``: only those that ended so)."""
        with self._state:
            return [e.sql for e in self.history if status is None or e.status == status]

    def executed_sql(self) -> list[str]:
        """Every SQL text run so far, in order (however it ended)."""
        return self.executed()

    def statement(self, statement_id: str) -> Statement:
        with self._state:
            found = self._statements.get(statement_id.split(":")[0])
        if found is None:
            raise AwsError("ResourceNotFoundException", f"Query {statement_id} does not exist.")
        return found

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no statement runs (tests: before reading the file or asserting history)."""
        deadline = time.monotonic() + timeout
        for st in list(self._statements.values()):
            if st.thread is not None:
                st.thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Cancel and join every running statement, then release the DuckDB file."""
        for st in list(self._statements.values()):
            self._request_cancel(st)
        for st in list(self._statements.values()):
            if st.thread is not None:
                st.thread.join(10)
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- operations --------------------------------------------------------------------------

    def execute_statement(self, Sql: str, **params: Any) -> dict[str, Any]:  # noqa: N803 - the API's names
        return self._submit([Sql], batch=False, **params)

    def batch_execute_statement(self, Sqls: list[str], **params: Any) -> dict[str, Any]:  # noqa: N803
        return self._submit(Sqls, batch=True, **params)

    def describe_statement(self, Id: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        st = self.statement(Id)
        with self._state:
            return st.describe()

    def get_statement_result(self, Id: str, NextToken: str | None = None, **_: Any) -> dict[str, Any]:  # noqa: N803
        st = self.statement(Id)
        sub = st.sub(Id)
        if sub.status != "FINISHED":
            raise AwsError(
                "ValidationException", f"Query {Id} is {sub.status}; results exist for FINISHED queries only."
            )
        if sub.columns is None:
            raise AwsError(
                "ValidationException", "Query does not have result. Please check query status with DescribeStatement."
            )
        if NextToken is not None and not NextToken.isdigit():
            raise AwsError("ValidationException", f"NextToken {NextToken!r} was not issued for query {Id}.")
        start = int(NextToken or 0)
        page = sub.rows[start : start + self.page_rows]
        out: dict[str, Any] = {
            "Records": [[field_value(v) for v in row] for row in page],
            "ColumnMetadata": sub.columns,
            "TotalNumRows": len(sub.rows),
        }
        if start + self.page_rows < len(sub.rows):
            out["NextToken"] = str(start + self.page_rows)
        return out

    def cancel_statement(self, Id: str) -> dict[str, Any]:  # noqa: N803
        st = self.statement(Id)
        with self._state:
            status = st.status
        if status not in RUNNING:
            raise AwsError("ValidationException", f"Could not cancel a query that is already in {status} state.")
        self._request_cancel(st)
        return {"Status": True}

    def list_statements(self, Status: str = "ALL", StatementName: str | None = None, **_: Any) -> dict[str, Any]:  # noqa: N803
        with self._state:
            found = [
                st.list_entry()
                for st in self._statements.values()
                if (Status == "ALL" or st.status == Status)
                and (not StatementName or (st.name or "").startswith(StatementName))
            ]
        return {"Statements": sorted(found, key=lambda s: s["CreatedAt"], reverse=True)}

    # -- submission ----------------------------------------------------------

    def _submit(self, sqls: list[str], *, batch: bool, **p: Any) -> dict[str, Any]:
        if p.get("SessionId") or p.get("SessionKeepAliveSeconds") is not None:
            operation = "BatchExecuteStatement" if batch else "ExecuteStatement"
            self.invalid.append(
                (operation, "valid, but this double keeps no sessions (SessionId, SessionKeepAliveSeconds)")
            )
            raise AwsError("UnsupportedOperation", "the redshift-data double keeps no sessions")
        if bool(p.get("ClusterIdentifier")) == bool(p.get("WorkgroupName")):
            raise AwsError("ValidationException", "Exactly one of ClusterIdentifier or WorkgroupName must be set.")
        if not p.get("Database"):
            raise AwsError("ValidationException", "Database must be set when ClusterIdentifier or WorkgroupName is.")
        if p.get("ClusterIdentifier") and not (p.get("DbUser") or p.get("SecretArn")):
            raise AwsError(
                "ValidationException", "A provisioned cluster needs DbUser (temporary credentials) or SecretArn."
            )
        statement_id = str(uuid.uuid4())
        subs = [Sub(id=f"{statement_id}:{n}" if batch else statement_id, sql=sql) for n, sql in enumerate(sqls, 1)]
        target = {
            k: p[k] for k in ("ClusterIdentifier", "WorkgroupName", "Database", "DbUser", "SecretArn") if p.get(k)
        }
        st = Statement(
            id=statement_id,
            subs=subs,
            batch=batch,
            params={q["name"]: q["value"] for q in p.get("Parameters") or []},
            target=target,
            name=p.get("StatementName"),
            user=p.get("DbUser") or "awsuser",
        )
        st.thread = threading.Thread(
            target=self._run, args=(st,), name=f"redshift-data:{statement_id[:8]}", daemon=True
        )
        with self._state:
            self._statements[statement_id] = st
        st.thread.start()
        return {"Id": statement_id, "CreatedAt": st.created, "Status": "SUBMITTED", **target}

    # -- execution ---------------------------------------------------------------------------

    def _request_cancel(self, st: Statement) -> None:
        st.cancel.set()
        cursor = st.cursor
        if cursor is not None:
            try:
                cursor.interrupt()
            except duckdb.Error:  # closed meanwhile: the statement has ended
                pass

    def _set(self, target: Statement | Sub, status: str, error: str | None = None) -> None:
        with self._state:
            target.status, target.updated = status, datetime.now(UTC)
            if error is not None:
                target.error = f"ERROR: {error}"

    def _run(self, st: Statement) -> None:
        started = time.monotonic()
        current: Sub | None = None
        cursor = None
        try:
            cursor = st.cursor = self._cursor()
            self._set(st, "STARTED")
            if st.cancel.wait(self.min_duration):  # a slow statement: cancellable before any effect
                raise Cancelled
            cursor.execute("BEGIN TRANSACTION")
            for current in st.subs:
                self._run_sub(st, current, cursor)
            cursor.execute("COMMIT")
            status, error = "FINISHED", None
        except BaseException as exc:  # noqa: BLE001 - every failure ends the statement, none escapes the thread
            status, error = self._failed(st, current, cursor, exc)
        # The end, its duration and the history change together: whoever sees the status sees the rest.
        with self._state:
            st.duration_ns = int((time.monotonic() - started) * 1e9)
            st.status, st.updated, st.cursor = status, datetime.now(UTC), None
            st.error = f"ERROR: {error}" if error else None
            self.history.extend(Executed(st.id, s.sql, s.status, s.error) for s in st.subs)
        if cursor is not None:
            cursor.close()

    def _failed(self, st: Statement, current: Sub | None, cursor: Any, exc: BaseException) -> tuple[str, str | None]:
        """Roll back and mark the sub-statements; the statement's (status, error)."""
        aborted = isinstance(exc, Cancelled | duckdb.InterruptException) or st.cancel.is_set()
        error = None if aborted else _message(exc)
        if not aborted and not isinstance(exc, RedshiftSqlError | duckdb.Error):
            log.exception("the Redshift Data API double failed on statement %s", st.id)
        if cursor is not None:
            try:
                cursor.execute("ROLLBACK")
            except duckdb.Error:
                pass  # no transaction open (failed before BEGIN)
        for sub in st.subs:
            if sub is current:
                self._set(sub, "ABORTED" if aborted else "FAILED", error)
            elif sub.status != "FINISHED":
                self._set(sub, "ABORTED")
        return ("ABORTED" if aborted else "FAILED"), error

    def _take_fault(self, sql: str) -> str | None:
        with self._state:
            for n, (error, match) in enumerate(self._faults):
                if match is None or match.lower() in sql.lower():
                    del self._faults[n]
                    return error
        return None

    def _run_sub(self, st: Statement, sub: Sub, cursor: Any) -> None:
        if st.cancel.is_set():
            raise Cancelled
        started = time.monotonic()
        self._set(sub, "STARTED")
        with self._state:
            sub.query_id = next(self._query_ids)
        fault = self._take_fault(sub.sql)
        if fault:
            raise RedshiftSqlError(fault)
        parsed = classify(sub.sql)
        if isinstance(parsed, Unload):
            sql = self._translate(st, parsed.query, cursor)
            sub.result_rows = redshift_io.unload(parsed, sql, cursor, self._s3_client(), st.cancel)
        elif isinstance(parsed, Copy):
            sub.result_rows = redshift_io.copy(parsed, cursor, self._s3_client(), st.user, self.grants)
        else:
            self._run_query(st, sub, parsed, cursor)
        if st.cancel.is_set():
            raise Cancelled
        sub.duration_ns = int((time.monotonic() - started) * 1e9)
        self._set(sub, "FINISHED")

    def _run_query(self, st: Statement, sub: Sub, parsed: Plain | Explain, cursor: Any) -> None:
        if isinstance(parsed, Explain):
            sql = "EXPLAIN " + self._translate(st, parsed.query, cursor)
            plan = cursor.execute(sql, _used(sql, st.params)).fetchall()
            sub.columns = [column("QUERY PLAN", "VARCHAR")]
            sub.rows = [(line,) for _, text in plan for line in text.splitlines() if line.strip()]
            sub.result_rows = len(sub.rows)
            return
        sql = self._translate(st, parsed.sql, cursor)
        cursor.execute(sql, _used(sql, st.params))
        if sql.lstrip().upper().startswith(_RETURNS_ROWS) and cursor.description is not None:
            sub.columns = [column(d[0], str(d[1])) for d in cursor.description]
            sub.rows = cursor.fetchall()
            sub.result_rows = len(sub.rows)
        elif cursor.description is not None and sql.lstrip().upper().startswith(("DELETE", "INSERT", "UPDATE")):
            sub.result_rows = int(cursor.fetchone()[0])  # DuckDB answers DML with its row count

    def _translate(self, st: Statement, sql: str, cursor: Any) -> str:
        def schema_exists(name: str) -> bool:
            found = cursor.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [name])
            return bool(found.fetchone()[0])

        database = st.target.get("Database", "dev")
        return translate(sql, user=st.user, grants=self.grants, database=database, schema_exists=schema_exists)

    def _s3_client(self) -> Any:
        with self._state:
            if self._s3 is None:
                self._s3 = redshift_io.s3_client(self.s3_endpoint, self.region)
            return self._s3


def _used(sql: str, params: dict[str, str]) -> dict[str, str]:
    # The Data API binds by name; DuckDB refuses values for names the statement does not use.
    return {k: v for k, v in params.items() if f"${k}" in sql}


def _message(exc: BaseException) -> str:
    if isinstance(exc, RedshiftSqlError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, duckdb.Error) else str(exc)
