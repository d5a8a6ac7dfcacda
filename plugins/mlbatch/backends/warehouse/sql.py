"""Feature SQL: the UNLOAD statements around rendered queries, and their DuckDB twins.

Rendering (Jinja, strict, injection-safe) is :mod:`mlbatch.spec.query`, re-exported
here. :func:`unload_statement` wraps a rendered query in the production ``UNLOAD``;
:func:`to_duckdb` transpiles it for the embedded warehouse, so both sides run the same text.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import ErrorLevel, SqlglotError

from mlbatch.backends.warehouse.manifest import UNLOAD_MAX_FILE_MB
from mlbatch.spec.query import SqlTemplateError, render, render_spec_query, sqldate, sqlnum, sqlstr

__all__ = [
    "SqlTemplateError",
    "render",
    "render_spec_query",
    "sqldate",
    "sqlnum",
    "sqlstr",
    "strip_comments",
    "to_duckdb",
    "unload_statement",
]
_IAM_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")


def strip_comments(query: str) -> str:
    """The query without comments and trailing semicolons, string literals untouched.

    Uses sqlglot's Redshift tokenizer so ``--`` or ``/*`` inside a literal stay; the text between
    tokens is kept when it is only whitespace and becomes one space (or newline) otherwise.
    """
    try:
        tokens = sqlglot.Dialect.get_or_raise("redshift").tokenize(query)
    except SqlglotError as exc:
        raise ValueError(f"cannot tokenize the query as Redshift SQL: {exc}") from None
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        raise ValueError("the query holds more than one statement (a ';' before its end)")
    out: list[str] = []
    for prev, tok in zip([None, *tokens], tokens, strict=False):
        if prev is not None:
            gap = query[prev.end + 1 : tok.start]
            out.append(gap if not gap.strip() else ("\n" if "\n" in gap else " "))
        out.append(query[tok.start : tok.end + 1])
    return "".join(out)


def unload_statement(query: str, *, s3_prefix: str, iam_role: str, max_file_size_mb: int = UNLOAD_MAX_FILE_MB) -> str:
    """The Redshift ``UNLOAD`` that writes ``query``'s rows as parquet parts plus a manifest.

    The query goes inside a string literal, so (per the UNLOAD reference) its quotes are doubled,
    and its backslashes too (Redshift reads them as escapes in a literal); comments are removed
    first (a ``--`` comment swallows whatever follows it on its line, including anything
    appended to the query text) and so is a trailing ``;``. UNLOAD forbids ``LIMIT`` in the outer
    SELECT. ``%`` is left as is: run the statement without DB-API parameters. No
    ``ALLOWOVERWRITE``: every run writes a fresh prefix, and an existing one is an error.
    """
    if not (s3_prefix.startswith("s3://") and s3_prefix.endswith("/")) or "'" in s3_prefix:
        raise ValueError(f"s3_prefix must look like s3://bucket/key/ (ending in '/'), got {s3_prefix!r}")
    if not _IAM_ROLE.match(iam_role):
        raise ValueError(f"iam_role must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), got {iam_role!r}")
    if not 5 <= max_file_size_mb <= 6200:
        raise ValueError(f"max_file_size_mb must be within 5..6200 (Redshift's MAXFILESIZE), got {max_file_size_mb}")
    inner = strip_comments(query).strip()
    try:
        parsed = sqlglot.parse_one(inner, read="redshift")
    except SqlglotError as exc:
        raise ValueError(f"the query does not parse as Redshift SQL: {exc}") from None
    if not isinstance(parsed, exp.Query):
        raise ValueError(f"UNLOAD needs a SELECT query, got a {parsed.key.upper()} statement")
    if parsed.args.get("limit"):
        raise ValueError("UNLOAD does not allow LIMIT in the outer SELECT; wrap the query in a subquery")
    body = inner.replace("\\", "\\\\").replace("'", "''")
    return (
        f"UNLOAD ('{body}')\n"
        f"TO '{s3_prefix}'\n"
        f"IAM_ROLE '{iam_role}'\n"
        "FORMAT AS PARQUET\n"
        "PARALLEL ON\n"
        "MANIFEST VERBOSE\n"
        f"MAXFILESIZE {max_file_size_mb} MB"
    )


def to_duckdb(query: str) -> str:
    """Transpile one Redshift query to DuckDB; constructs DuckDB cannot express are errors."""
    try:
        out = sqlglot.transpile(query, read="redshift", write="duckdb", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise ValueError(f"cannot transpile the query from Redshift to DuckDB: {exc}") from None
    statements = [s for s in out if s.strip()]
    if len(statements) != 1:
        raise ValueError(f"expected one query, found {len(statements)} statements")
    return statements[0]
