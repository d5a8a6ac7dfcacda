"""Feature SQL: Jinja-templated Redshift queries, their UNLOAD statements, their DuckDB twins.

Templates are rendered with :func:`render`, strictly: an undefined name is an error that names
it (``StrictUndefined``), and values reach the SQL only as safe literals:

- ``{{ ds }}``: the run date as plain ``YYYY-MM-DD`` (``ds`` is checked to be an ISO date);
  ``{{ ds | sqldate }}`` is the date literal ``CAST('YYYY-MM-DD' AS DATE)``.
- ``{{ value | sqlstr }}``: a string literal, quotes doubled and backslashes doubled (Redshift
  reads a backslash in a literal as an escape character).
- ``{{ value | sqlnum }}``: a number, checked to be one (a finite int, float or decimal).
- ``{{ value | sqldate }}``: a date literal from a ``date`` or an ISO date string.
- A bare ``{{ value }}`` renders numbers and booleans as themselves, and a string only when it
  is a plain identifier (``[A-Za-z_][A-Za-z0-9_]*``, e.g. a column name from a Jinja loop) or
  an ISO date; any other string is an error that asks for ``sqlstr``, so a parameter cannot
  inject SQL by forgetting a filter.

:func:`unload_statement` wraps a rendered query in the production ``UNLOAD``; :func:`to_duckdb`
transpiles it for the embedded warehouse, so both sides run the same text.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import jinja2
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError
from sqlglot.tokens import TokenType

from mlbatch.features.manifest import UNLOAD_MAX_FILE_MB

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_IAM_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")


class SqlTemplateError(ValueError):
    """A feature template cannot be rendered; the message names the file (or template) and line."""


class _Literal(str):
    """Text a filter made safe; the finalizer lets it through unchanged."""


def _iso_date(value: Any, what: str) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise SqlTemplateError(f"{what} must be an ISO date YYYY-MM-DD, got {value!r}")


def sqlstr(value: Any) -> _Literal:
    if not isinstance(value, str):
        raise SqlTemplateError(f"sqlstr expects a string, got {type(value).__name__} {value!r}")
    return _Literal("'" + value.replace("\\", "\\\\").replace("'", "''") + "'")


def sqlnum(value: Any) -> _Literal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise SqlTemplateError(f"sqlnum expects a number, got {type(value).__name__} {value!r}")
    if isinstance(value, str):
        if not _NUMBER.match(value.strip()):
            raise SqlTemplateError(f"sqlnum expects a number, got the string {value!r}")
        return _Literal(value.strip())
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        raise SqlTemplateError(f"sqlnum expects a finite number, got {value!r}")
    return _Literal(repr(value) if isinstance(value, float) else str(value))


def sqldate(value: Any) -> _Literal:
    return _Literal(f"CAST('{_iso_date(value, 'sqldate value')}' AS DATE)")


def _finalize(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the missing variable
    if isinstance(value, _Literal):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float | Decimal):
        return sqlnum(value)
    if isinstance(value, str) and (_IDENTIFIER.match(value) or _ISO_DATE.match(value)):
        return value
    raise SqlTemplateError(
        f"refusing to render {value!r} into SQL as is: use | sqlstr for a string literal, "
        "| sqlnum for a number, | sqldate for a date"
    )


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    finalize=_finalize,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 (SQL, not HTML: the finalizer and filters escape)
)
_ENV.filters.update(sqlstr=sqlstr, sqlnum=sqlnum, sqldate=sqldate)


def _template_line(exc: BaseException) -> int | None:
    """The template line a Jinja error happened on (Jinja maps its frames to ``<template>``)."""
    if getattr(exc, "lineno", None):
        return exc.lineno  # type: ignore[attr-defined]
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(template_text: str, *, ds: str, params: dict[str, Any], source: str = "<template>") -> str:
    """Render a feature template for run date ``ds``; errors name ``source`` and the line."""
    try:
        ds = _iso_date(ds, "ds")
        return _ENV.from_string(template_text).render(ds=ds, params=params)
    except (jinja2.TemplateError, SqlTemplateError) as exc:
        line = _template_line(exc)
        where = f"{source}, line {line}" if line else source
        raise SqlTemplateError(f"{where}: {exc}") from None


def render_spec_query(spec: Any, stage: Literal["training", "scoring"], ds: str) -> str:
    """Render a model spec's training or scoring query (Redshift dialect) for ``ds``."""
    if stage not in ("training", "scoring"):
        raise ValueError(f"stage must be 'training' or 'scoring', got {stage!r}")
    path: Path = spec.resolve(getattr(spec.features, f"{stage}_sql"))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SqlTemplateError(f"{spec.name}: cannot read the {stage} query {path}: {exc}") from None
    return render(text, ds=ds, params=dict(spec.features.params), source=str(path))


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
