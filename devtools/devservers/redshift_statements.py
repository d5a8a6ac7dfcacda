"""The Redshift Data API double's statement records, and how the API renders them.

A :class:`Statement` is what ``ExecuteStatement`` (one :class:`Sub`) or ``BatchExecuteStatement``
(one :class:`Sub` per SQL text, ids ``<id>:<n>``) created; ``DescribeStatement``,
``ListStatements`` and ``GetStatementResult`` answer from it in the Data API's shapes (checked
against botocore's output model in the wire tests). Result values are typed as the Data API
types them: ``longValue``, ``doubleValue``, ``booleanValue``, ``stringValue`` (also DECIMAL,
DATE, TIMESTAMP), ``blobValue``, ``isNull``.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devtools.devservers.aws_wire import AwsError

RUNNING = ("SUBMITTED", "PICKED", "STARTED")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Executed:
    """One SQL text the double ran (a sub-statement of a batch is one), and how it ended."""

    statement_id: str
    sql: str
    status: str
    error: str | None = None


@dataclass
class Sub:
    """One SQL text of a statement: the statement itself, or one of a batch's."""

    id: str
    sql: str
    status: str = "SUBMITTED"
    error: str | None = None
    created: datetime = field(default_factory=_now)
    updated: datetime = field(default_factory=_now)
    duration_ns: int = -1
    result_rows: int = -1  # rows returned or affected; -1: none (DDL), as the Data API says
    query_id: int = 0
    columns: list[dict[str, Any]] | None = None  # set when the statement returns rows
    rows: list[tuple] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        out = {
            "Id": self.id,
            "Status": self.status,
            "CreatedAt": self.created,
            "UpdatedAt": self.updated,
            "Duration": self.duration_ns,
            "QueryString": self.sql,
            "ResultRows": self.result_rows,
            "RedshiftQueryId": self.query_id,
            "HasResultSet": self.columns is not None,
        }
        if self.error:
            out["Error"] = self.error
        return out


@dataclass
class Statement:
    """What one ExecuteStatement or BatchExecuteStatement created, and where it stands."""

    id: str
    subs: list[Sub]
    batch: bool
    params: dict[str, str]
    target: dict[str, Any]  # ClusterIdentifier / WorkgroupName, Database, DbUser, SecretArn
    name: str | None
    user: str
    status: str = "SUBMITTED"
    error: str | None = None
    created: datetime = field(default_factory=_now)
    updated: datetime = field(default_factory=_now)
    duration_ns: int = -1
    cancel: threading.Event = field(default_factory=threading.Event)
    cursor: Any = None  # the DuckDB cursor while it runs (CancelStatement interrupts it)
    thread: threading.Thread | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": self.id,
            "Status": self.status,
            "CreatedAt": self.created,
            "UpdatedAt": self.updated,
            "Duration": self.duration_ns,
            "QueryString": "; ".join(s.sql for s in self.subs) if self.batch else self.subs[0].sql,
            "RedshiftPid": 1073741824 + int(self.id[:5], 16),
            "HasResultSet": any(s.columns is not None for s in self.subs),
            **self.target,
        }
        if self.params:
            out["QueryParameters"] = [{"name": k, "value": v} for k, v in self.params.items()]
        if self.error:
            out["Error"] = self.error
        if self.batch:
            out["SubStatements"] = [s.describe() for s in self.subs]
        else:
            sub = self.subs[0]
            out.update(ResultRows=sub.result_rows, RedshiftQueryId=sub.query_id, HasResultSet=sub.columns is not None)
        return out

    def list_entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": self.id,
            "Status": self.status,
            "CreatedAt": self.created,
            "UpdatedAt": self.updated,
            "IsBatchStatement": self.batch,
        }
        if self.name:
            out["StatementName"] = self.name
        if self.batch:
            out["QueryStrings"] = [s.sql for s in self.subs]
        else:
            out["QueryString"] = self.subs[0].sql
        return out

    def sub(self, statement_id: str) -> Sub:
        """The sub-statement ``statement_id`` names (``<id>:<n>`` in a batch, ``<id>`` alone)."""
        if ":" not in statement_id:
            if self.batch:
                raise AwsError("ValidationException", f"{statement_id} is a batch: ask for a sub-statement, <id>:<n>.")
            return self.subs[0]
        n = statement_id.rsplit(":", 1)[1]
        if not n.isdigit() or not 1 <= int(n) <= len(self.subs):
            raise AwsError("ResourceNotFoundException", f"Query {statement_id} does not exist.")
        return self.subs[int(n) - 1]


_TYPE_NAMES = {
    "BIGINT": "int8",
    "HUGEINT": "numeric",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "TINYINT": "int2",
    "DOUBLE": "float8",
    "FLOAT": "float4",
    "VARCHAR": "varchar",
    "BOOLEAN": "bool",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}


def column(name: str, duck_type: str) -> dict[str, Any]:
    """ColumnMetadata for a result column of DuckDB type ``duck_type``, with Redshift's type names."""
    type_name = _TYPE_NAMES.get(duck_type, "numeric" if duck_type.startswith("DECIMAL") else duck_type.lower())
    return {
        "name": name,
        "label": name,
        "typeName": type_name,
        "nullable": 1,
        "isSigned": type_name in ("int8", "int4", "int2", "float8", "float4", "numeric"),
        "isCaseSensitive": type_name == "varchar",
        "isCurrency": False,
        "precision": 0,
        "scale": 0,
        "length": 0,
        "schemaName": "",
        "tableName": "",
    }


def field_value(value: Any) -> dict[str, Any]:
    """A value as the Data API's typed field (DECIMAL, DATE and TIMESTAMP come as strings)."""
    if value is None:
        return {"isNull": True}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"longValue": value}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"blobValue": base64.b64encode(value).decode()}  # the JSON protocol's blobs
    if isinstance(value, datetime):
        return {"stringValue": value.isoformat(sep=" ")}
    return {"stringValue": str(value)}


_SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "double": (float, int),
    "float": (float, int),
    "timestamp": (datetime,),
    "blob": (str, bytes),
}


def output_problems(shape: Any, value: Any, path: str = "") -> list[str]:
    """What in a response does not match botocore's output ``shape``: a misnamed member would be
    dropped silently by the client's parser, so the double checks its answers itself."""
    where = path or "response"
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        unknown = sorted(set(value) - set(shape.members))
        problems = [f"{where}: no member {k!r} in {shape.name}" for k in unknown]
        if getattr(shape, "is_union", False) and len(value) != 1:
            problems.append(f"{where}: a {shape.name} union sets exactly one member, got {sorted(value)}")
        for name, member in shape.members.items():
            if name in value:
                problems += output_problems(member, value[name], f"{where}.{name}")
        return problems
    if shape.type_name == "list":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for n, item in enumerate(value) for p in output_problems(shape.member, item, f"{where}[{n}]")]
    expected = _SCALARS.get(shape.type_name)
    if expected and (not isinstance(value, expected) or (shape.type_name != "boolean" and isinstance(value, bool))):
        return [f"{where}: expected {shape.type_name}, got {type(value).__name__} {value!r}"]
    return []
