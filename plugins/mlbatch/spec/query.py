"""Feature templates: the Jinja rendering of a spec's SQL, strict and injection-safe.

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

Apart from :mod:`mlbatch.backends.warehouse.sql` (UNLOAD, DuckDB transpiling: sqlglot, heavy) because the
spec renders its queries at load (:func:`mlbatch.spec.load_spec`), on every DAG parse: this
module imports Jinja only.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jinja2

from mlbatch.errors import UsageError

if TYPE_CHECKING:  # the spec imports this module when it loads
    from mlbatch.spec.model import ModelSpec

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
Stage = Literal["training", "scoring"]
STAGES: tuple[Stage, ...] = ("training", "scoring")


class SqlTemplateError(UsageError, ValueError):
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
    lineno: int | None = getattr(exc, "lineno", None)  # a jinja2.TemplateSyntaxError's
    if lineno:
        return lineno
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


def render_spec_query(spec: ModelSpec, stage: Stage, ds: str) -> str:
    """Render a model spec's training or scoring query (Redshift dialect) for ``ds``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be 'training' or 'scoring', got {stage!r}")
    path: Path = spec.resolve(getattr(spec.features, f"{stage}_sql"))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SqlTemplateError(f"{spec.name}: cannot read the {stage} query {path}: {exc}") from None
    return render(text, ds=ds, params=dict(spec.features.params), source=str(path))


def spec_query_problems(spec: ModelSpec, ds: str) -> list[tuple[str, str]]:
    """``(field, what is wrong)`` for each of the spec's queries that is missing or does not
    render for the sample day ``ds``: what :func:`mlbatch.spec.load_spec` reports at load, so a
    wrong path or a template error fails the DAG's import instead of a run."""
    problems: list[tuple[str, str]] = []
    for stage in STAGES:
        field = f"{stage}_sql"
        path: Path = spec.resolve(getattr(spec.features, field))
        if not path.is_file():
            where = f"a relative path starts at {spec.root} (MLBATCH_PROJECT_DIR, else the repo root)"
            problems.append((f"features.{field}", f"no such file {path}; {where}"))
            continue
        try:
            render_spec_query(spec, stage, ds)
        except SqlTemplateError as exc:
            problems.append((f"features.{field}", f"does not render for a sample day ({ds}): {exc}"))
    return problems
