"""Redshift SQL as the Redshift Data API double runs it on DuckDB: parsing, translation, privileges.

What mlbatch sends (:func:`mlbatch.backends.warehouse.sql.unload_statement`,
:func:`mlbatch.backends.warehouse.redshift.replace_day_statements`, the counts of ``RedshiftWarehouse``)
and what an operator's checks send is classified here into one of:

- :class:`Unload`: ``UNLOAD ('<select>') TO 's3://...' IAM_ROLE '...' FORMAT AS PARQUET ...``,
  the inner query un-escaped as Redshift reads a string literal;
- :class:`Copy`: ``COPY <table> [(cols)] FROM 's3://...' IAM_ROLE '...' FORMAT AS PARQUET [MANIFEST]``;
- :class:`Explain`: ``EXPLAIN <select>``;
- :class:`Plain`: any other statement, transpiled with sqlglot (``read="redshift"``,
  ``write="duckdb"``), Data API parameters (``:name``) becoming DuckDB's ``$name``.

Privileges are a :class:`Grants` model (everything granted until a test revokes it); each
statement's needs are derived from its parse tree, and a missing one fails with Redshift's text
(``permission denied for schema <name>`` / ``permission denied for relation <name>``).
``current_user`` answers the statement's ``DbUser``; ``has_schema_privilege`` and
``has_table_privilege`` are answered from the same :class:`Grants`.

Nothing here is production code; it imports no mlbatch module, so the double cannot agree with
a production bug by sharing its code.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

SCHEMA_PRIVILEGES = {"USAGE", "CREATE", "TEMP", "TEMPORARY"}
TABLE_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "REFERENCES"}
_CATALOG_PREFIXES = ("pg_", "stv_", "stl_", "svv_", "svl_", "sys_")  # unqualified: the system catalog
_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "main", "temp"}
# DuckDB ships pg_catalog look-alikes of these that answer TRUE: the double's own are renamed.
PRIVILEGE_UDFS = {
    "has_database_privilege": "_rsd_has_database_privilege",
    "has_schema_privilege": "_rsd_has_schema_privilege",
    "has_table_privilege": "_rsd_has_table_privilege",
}
DATABASE = "#database"  # the schema key under which Grants keeps the database's privileges

_LITERAL = r"'((?:[^']|'')*)'"
_UNLOAD = re.compile(r"^\s*UNLOAD\s*\(\s*" + _LITERAL + r"\s*\)\s*TO\s*" + _LITERAL + r"(.*)$", re.I | re.S)
_COPY = re.compile(
    r"^\s*COPY\s+([A-Za-z0-9_.\"]+)\s*(\([^)]*\))?\s*FROM\s*" + _LITERAL + r"(.*)$",
    re.I | re.S,
)
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(.*)$", re.I | re.S)
_IAM_ROLE = re.compile(r"\bIAM_ROLE\s+(?:'([^']*)'|(default))", re.I)
_MAXFILESIZE = re.compile(r"\bMAXFILESIZE\s+(?:AS\s+)?(\d+(?:\.\d+)?)\s*(MB|GB)?", re.I)
_PARALLEL = re.compile(r"\bPARALLEL\s+(ON|OFF|TRUE|FALSE)\b", re.I)


class RedshiftSqlError(Exception):
    """A statement Redshift would reject; the message is Redshift's text (without ``ERROR: ``)."""


@dataclass(frozen=True)
class Unload:
    query: str  # the inner SELECT, in Redshift's dialect, quotes un-doubled
    s3_prefix: str
    iam_role: str
    parquet: bool
    parallel: bool
    manifest: bool
    verbose: bool
    max_file_bytes: int
    allow_overwrite: bool


@dataclass(frozen=True)
class Copy:
    schema: str
    table: str
    columns: tuple[str, ...] | None
    source: str  # an S3 prefix, or the manifest's URI when ``manifest``
    iam_role: str
    parquet: bool
    manifest: bool


@dataclass(frozen=True)
class Explain:
    query: str


@dataclass(frozen=True)
class Plain:
    sql: str


Statement = Unload | Copy | Explain | Plain


def _unquote(literal: str) -> str:
    # Redshift reads '' as ' and \\ as \ inside a literal (unload_statement doubles both).
    return literal.replace("''", "'").replace("\\\\", "\\")


def _iam_role(options: str, verb: str) -> str:
    found = _IAM_ROLE.search(options)
    if not found:
        raise RedshiftSqlError(f"{verb} needs authorization: IAM_ROLE '<arn>' (or CREDENTIALS) is missing")
    return found.group(1) or "default"


def classify(sql: str) -> Statement:
    """What kind of statement ``sql`` is, with its parts; raises :class:`RedshiftSqlError` on
    a statement Redshift would not parse."""
    text = sql.strip().rstrip(";").strip()
    if re.match(r"^UNLOAD\b", text, re.I):
        return _parse_unload(text)
    if re.match(r"^COPY\b", text, re.I):
        return _parse_copy(text)
    explain = _EXPLAIN.match(text)
    if explain:
        return Explain(explain.group(1))
    return Plain(text)


def _parse_unload(text: str) -> Unload:
    match = _UNLOAD.match(text)
    if not match:
        raise RedshiftSqlError(
            f"syntax error at or near \"UNLOAD\": expected UNLOAD ('<query>') TO 's3://...' ({text[:80]})"
        )
    query, target, options = _unquote(match.group(1)), match.group(2), match.group(3)
    if not target.startswith("s3://"):
        raise RedshiftSqlError(f"UNLOAD destination must be an S3 path, got '{target}'")
    size = _MAXFILESIZE.search(options)
    max_bytes = 6200 * 2**20
    if size:
        max_bytes = int(float(size.group(1)) * (2**30 if (size.group(2) or "MB").upper() == "GB" else 2**20))
        if not 5 * 2**20 <= max_bytes <= 6200 * 2**20:
            raise RedshiftSqlError("MAXFILESIZE must be between 5 MB and 6.2 GB")
    parallel = _PARALLEL.search(options)
    return Unload(
        query=query,
        s3_prefix=target,
        iam_role=_iam_role(options, "UNLOAD"),
        parquet=bool(re.search(r"\bFORMAT\s+(AS\s+)?PARQUET\b", options, re.I)),
        parallel=parallel is None or parallel.group(1).upper() in ("ON", "TRUE"),
        manifest=bool(re.search(r"\bMANIFEST\b", options, re.I)),
        verbose=bool(re.search(r"\bMANIFEST\s+VERBOSE\b", options, re.I)),
        max_file_bytes=max_bytes,
        allow_overwrite=bool(re.search(r"\bALLOWOVERWRITE\b", options, re.I)),
    )


def _parse_copy(text: str) -> Copy:
    match = _COPY.match(text)
    if not match:
        raise RedshiftSqlError(f"syntax error at or near \"COPY\": expected COPY <table> FROM 's3://...' ({text[:80]})")
    name, columns, source, options = match.groups()
    parts = [p.strip('"') for p in name.split(".")]
    schema, table = (parts if len(parts) == 2 else ["public", parts[-1]])[-2:]
    if not source.startswith("s3://"):
        raise RedshiftSqlError(f"COPY from '{source}': only S3 sources are supported by this double")
    cols = tuple(c.strip().strip('"') for c in columns.strip("()").split(",")) if columns else None
    return Copy(
        schema=schema.lower(),
        table=table.lower(),
        columns=cols,
        source=source,
        iam_role=_iam_role(options, "COPY"),
        parquet=bool(re.search(r"\bFORMAT\s+(AS\s+)?PARQUET\b", options, re.I)),
        manifest=bool(re.search(r"\bMANIFEST\b", options, re.I)),
    )


# -- privileges ------------------------------------------------------------------------------


@dataclass
class Grants:
    """Who may do what; everything is granted until revoked. ``user=None`` means every user.

    Schema privileges: USAGE, CREATE. Table privileges (SELECT, INSERT, DELETE, ...) are revoked
    on one table (``table=``) or on every table of a schema (``table=None``), as ``REVOKE ... ON
    ALL TABLES IN SCHEMA`` does.
    """

    _revoked: set[tuple[str | None, str, str, str | None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def revoke(self, privilege: str, schema: str, table: str | None = None, user: str | None = None) -> None:
        privilege = privilege.upper()
        if privilege not in SCHEMA_PRIVILEGES | TABLE_PRIVILEGES:
            raise ValueError(f"unknown privilege {privilege!r}: one of {sorted(SCHEMA_PRIVILEGES | TABLE_PRIVILEGES)}")
        with self._lock:
            self._revoked.add((user, privilege, schema.lower(), table.lower() if table else None))

    def reset(self) -> None:
        """Everything granted again (between tests)."""
        with self._lock:
            self._revoked.clear()

    def _is_revoked(self, user: str | None, privilege: str, schema: str, table: str | None) -> bool:
        with self._lock:
            return any((who, privilege, schema, table) in self._revoked for who in (None, user))

    def denied(self, user: str | None, privilege: str, schema: str, table: str | None = None) -> str | None:
        """Redshift's error when ``user`` lacks ``privilege``, else None."""
        privilege, schema = privilege.upper(), schema.lower()
        if schema in _SYSTEM_SCHEMAS:
            return None
        if schema == DATABASE:
            return "permission denied for database" if self._is_revoked(user, privilege, schema, None) else None
        if table is None or privilege in SCHEMA_PRIVILEGES:
            return f"permission denied for schema {schema}" if self._is_revoked(user, privilege, schema, None) else None
        if self._is_revoked(user, "USAGE", schema, None) or self._is_revoked(user, privilege, schema, None):
            return f"permission denied for schema {schema}"
        if self._is_revoked(user, privilege, schema, table.lower()):
            return f"permission denied for relation {table.lower()}"
        return None

    def check(self, user: str | None, privilege: str, schema: str, table: str | None = None) -> None:
        error = self.denied(user, privilege, schema, table)
        if error:
            raise RedshiftSqlError(error)

    # The SQL functions (registered on the DuckDB connection under PRIVILEGE_UDFS' names).
    def has_database_privilege(self, user: str, database: str, privileges: str) -> bool:
        return any(self.denied(user, p.strip(), DATABASE) is None for p in privileges.split(","))

    def has_schema_privilege(self, user: str, schema: str, privileges: str) -> bool:
        return any(self.denied(user, p.strip(), schema) is None for p in privileges.split(","))

    def has_table_privilege(self, user: str, table: str, privileges: str) -> bool:
        schema, _, name = table.rpartition(".")
        return any(self.denied(user, p.strip(), schema or "public", name) is None for p in privileges.split(","))


# -- translation -------------------------------------------------------------------------------


def _table_ref(table: exp.Table) -> tuple[str, str]:
    return (table.db or "public").lower(), table.name.lower()


def _needs(tree: exp.Expression) -> list[tuple[str, str, str | None]]:
    """(privilege, schema, table) the statement needs, in the order Redshift checks them."""
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    target: exp.Table | None = None
    needs: list[tuple[str, str, str | None]] = []
    if isinstance(tree, exp.Create) and tree.kind and tree.kind.upper() == "TABLE":
        target = tree.this.find(exp.Table) if not isinstance(tree.this, exp.Table) else tree.this
        needs.append(("CREATE", _table_ref(target)[0], None))
    elif isinstance(tree, exp.Delete | exp.Insert | exp.Update):
        target = tree.this if isinstance(tree.this, exp.Table) else tree.this.find(exp.Table)
        verb = {exp.Delete: "DELETE", exp.Insert: "INSERT", exp.Update: "UPDATE"}[type(tree)]
        needs.append((verb, *_table_ref(target)))
    elif isinstance(tree, exp.Create) and tree.kind and tree.kind.upper() == "SCHEMA":
        return [("CREATE", DATABASE, tree.this.db.lower() if isinstance(tree.this, exp.Table) else "")]
    elif isinstance(tree, exp.Drop):
        return needs  # DROP: ownership, not modelled
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if table is target or not name or (not table.db and (name in ctes or name.startswith(_CATALOG_PREFIXES))):
            continue
        needs.append(("SELECT", *_table_ref(table)))
    return needs


def _rewrite(tree: exp.Expression, user: str, database: str) -> exp.Expression:
    def current_user(n: exp.Expression) -> exp.Expression:
        names = {exp.CurrentUser: ("current_user", user), exp.CurrentDatabase: ("current_database", database)}
        if type(n) not in names:
            return n
        alias, value = names[type(n)]
        projected = isinstance(n.parent, exp.Select) and n.arg_key == "expressions"
        return exp.alias_(exp.Literal.string(value), alias) if projected else exp.Literal.string(value)

    def node(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Anonymous) and n.name.lower() in PRIVILEGE_UDFS:
            args = list(n.expressions)
            if len(args) == 2:  # has_schema_privilege(schema, priv): the current user's
                args = [exp.Literal.string(user), *args]
            return exp.Anonymous(this=PRIVILEGE_UDFS[n.name.lower()], expressions=args)
        return n

    return tree.transform(current_user).transform(node)


def _enforce_lengths(tree: exp.Expression) -> exp.Expression:
    """CREATE TABLE: VARCHAR(n)/CHAR(n) hold at most n BYTES in Redshift; DuckDB ignores the
    length, so each becomes a CHECK and a longer value fails here as it would there."""
    if not (isinstance(tree, exp.Create) and (tree.kind or "").upper() == "TABLE"):
        return tree
    for column in tree.find_all(exp.ColumnDef):
        kind = column.args.get("kind")
        sized = kind is not None and kind.this in (exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR)
        if sized and kind.expressions and kind.expressions[0].name.isdigit():
            size = exp.Anonymous(this="strlen", expressions=[exp.column(column.name, quoted=True)])
            check = exp.CheckColumnConstraint(
                this=exp.LTE(this=size, expression=exp.Literal.number(kind.expressions[0].name))
            )
            column.append("constraints", exp.ColumnConstraint(kind=check))
    return tree


def translate(
    sql: str,
    *,
    user: str,
    grants: Grants,
    database: str = "dev",
    schema_exists: Callable[[str], bool] = lambda _: False,
) -> str:
    """One Redshift statement as DuckDB SQL, after checking ``user``'s privileges for it.

    ``CREATE SCHEMA IF NOT EXISTS`` of a schema that exists changes nothing and needs no
    privilege; creating one needs CREATE on the database (``permission denied for database``).
    """
    try:
        trees = [t for t in sqlglot.parse(sql, read="redshift", error_level=ErrorLevel.RAISE) if t is not None]
    except SqlglotError as exc:
        raise RedshiftSqlError(f"syntax error: {exc}") from None
    if len(trees) != 1:
        raise RedshiftSqlError(f"expected one statement, got {len(trees)} (the Data API runs one per Sql)")
    tree = trees[0]
    for privilege, schema, table in _needs(tree):
        if schema == DATABASE:
            if not (tree.args.get("exists") and table and schema_exists(table)):
                grants.check(user, privilege, DATABASE)
            continue
        grants.check(user, privilege, schema, table)
    try:
        return _enforce_lengths(_rewrite(tree, user, database)).sql("duckdb", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise RedshiftSqlError(f"this double cannot run the statement on DuckDB: {exc}") from None
