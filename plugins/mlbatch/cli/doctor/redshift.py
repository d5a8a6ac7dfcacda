"""``mlbatch doctor``'s Redshift probes: what the first run's statements need, asked without
running them, through the production path (:class:`~mlbatch.backends.warehouse.redshift.RedshiftWarehouse`
on the Data API, the workers' connection and database user).

* ``EXPLAIN`` of each spec's training and scoring query, rendered as the features stage renders
  it (:func:`~mlbatch.backends.warehouse.sql.render_spec_query`): a query that does not parse, names a
  missing column, or reads a table the user may not read fails here instead of in the UNLOAD;
* ``has_schema_privilege(current_user, <schema>, 'USAGE')`` and
  ``has_table_privilege(current_user, '<schema>.<table>', 'SELECT')`` for every table the
  queries read, so the fix is the exact GRANT;
* ``has_schema_privilege(current_user, <export schema>, 'CREATE')``: the export creates its
  table there (``CREATE SCHEMA/TABLE IF NOT EXISTS``, then DELETE + COPY).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from mlbatch.backends.warehouse.sql import render_spec_query, strip_comments
from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.names import EXPORT_SCHEMA
from mlbatch.spec import ModelSpec

if TYPE_CHECKING:
    from mlbatch.backends.warehouse.redshift import RedshiftWarehouse
    from mlbatch.spec.query import Stage

STAGES: tuple[Stage, ...] = ("training", "scoring")


def source_tables(query: str) -> set[tuple[str, str]]:
    """(schema, table) of every table a query reads; unqualified tables are in ``public``."""

    parsed = sqlglot.parse_one(strip_comments(query), read="redshift")
    ctes = {cte.alias_or_name.lower() for cte in parsed.find_all(exp.CTE)}
    tables = set()
    for table in parsed.find_all(exp.Table):
        name, schema = table.name.lower(), (table.db or "").lower()
        if name and (schema or name not in ctes):
            tables.add((schema or "public", name))
    return tables


def check_redshift_access(wh: RedshiftWarehouse, specs: list[ModelSpec], ds: str | None = None) -> list[Check]:
    """Every probe's result; ``wh`` is the environment's RedshiftWarehouse."""

    day = ds or datetime.now(UTC).date().isoformat()
    try:
        user = str(wh.query_value("SELECT current_user"))
    except Exception as exc:  # noqa: BLE001
        return [
            Check(
                "Redshift user", "FAIL", f"SELECT current_user: {describe_error(exc)}", "see the warehouse line above"
            )
        ]
    checks: list[Check] = []
    tables: set[tuple[str, str]] = set()
    for spec in specs:
        for stage in STAGES:
            try:
                query = render_spec_query(spec, stage, day)
                tables |= source_tables(query)
            except Exception as exc:  # noqa: BLE001 - a spec that loaded renders; say so if not
                checks.append(
                    Check(f"SQL {spec.name}", "FAIL", f"{stage} query: {describe_error(exc)}", "fix the query")
                )
                continue
            checks.append(_explain(wh, spec.name, stage, query, user))
    checks += _select_grants(wh, tables, user)
    checks.append(_create_grant(wh, user))
    return checks


def _grantee(user: str) -> str:
    # IAM users look like "IAMR:role" or "IAM:user": quote, as GRANT needs for such names.
    return user if user.isidentifier() and user.islower() else '"' + user.replace('"', '""') + '"'


def _explain(wh: RedshiftWarehouse, model: str, stage: str, query: str, user: str) -> Check:

    boundary = f"SQL {model} {stage}"
    try:
        wh.run("EXPLAIN " + strip_comments(query))
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        fix = f"fix the {stage} query (features.{stage}_sql of {model}): EXPLAIN fails as the UNLOAD would"
        if "permission denied" in text:
            fix = f"GRANT the reads the line below names to {_grantee(user)} (SELECT on the table, USAGE on its schema)"
        return Check(boundary, "FAIL", f"EXPLAIN of the {stage} query fails: {describe_error(exc)}", fix)
    return Check(boundary, "ok", f"EXPLAIN of the {stage} query succeeds as {user}")


def _select_grants(wh: RedshiftWarehouse, tables: set[tuple[str, str]], user: str) -> list[Check]:
    checks = []
    for schema in sorted({s for s, _ in tables}):
        names = sorted(t for s, t in tables if s == schema)
        try:
            grants = _missing_reads(wh, schema, names, _grantee(user))
        except Exception as exc:  # noqa: BLE001 - e.g. the schema or a table does not exist
            detail = f"cannot check SELECT on {schema}: {describe_error(exc)}"
            checks.append(Check(f"Redshift {schema}", "FAIL", detail, "see the EXPLAIN lines above"))
            continue
        if grants:
            detail = f"{user} may not read {', '.join(f'{schema}.{t}' for t in names)} as the queries do"
            checks.append(Check(f"Redshift {schema}", "FAIL", detail, "; ".join(grants)))
        else:
            checks.append(Check(f"Redshift {schema}", "ok", f"{user} may SELECT from {', '.join(names)}"))
    return checks


def _missing_reads(wh: RedshiftWarehouse, schema: str, names: list[str], grantee: str) -> list[str]:
    """The GRANTs that would let the user read ``names`` in ``schema`` (empty: it may)."""
    sql = "SELECT has_schema_privilege(current_user, :schema, 'USAGE')"
    grants = (
        [] if _truthy(wh.query_value(sql, {"schema": schema})) else [f"GRANT USAGE ON SCHEMA {schema} TO {grantee}"]
    )
    for name in names:
        sql = "SELECT has_table_privilege(current_user, :table, 'SELECT')"
        if not _truthy(wh.query_value(sql, {"table": f"{schema}.{name}"})):
            grants.append(f"GRANT SELECT ON {schema}.{name} TO {grantee}")
    return grants


def _create_grant(wh: RedshiftWarehouse, user: str) -> Check:
    schema = EXPORT_SCHEMA  # of every export table (mlbatch.names.export_table)
    boundary = f"Redshift {schema}"
    try:
        exists = int(
            wh.query_value("SELECT COUNT(*) FROM pg_namespace WHERE nspname = :schema", {"schema": schema}) or 0
        )
        if exists:
            allowed = _truthy(
                wh.query_value("SELECT has_schema_privilege(current_user, :schema, 'CREATE')", {"schema": schema})
            )
            fix = f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {_grantee(user)}"
        else:  # the export's CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
            allowed = _truthy(
                wh.query_value("SELECT has_database_privilege(current_user, current_database(), 'CREATE')")
            )
            fix = f"CREATE SCHEMA {schema}; GRANT USAGE, CREATE ON SCHEMA {schema} TO {_grantee(user)}"
    except Exception as exc:  # noqa: BLE001
        return Check(boundary, "FAIL", f"cannot check CREATE on {schema}: {describe_error(exc)}", "see the lines above")
    if not allowed:
        where = f"schema {schema}" if exists else f"the database (schema {schema} does not exist yet)"
        return Check(boundary, "FAIL", f"{user} may not CREATE in {where}: the export would fail", fix)
    return Check(boundary, "ok", f"{user} may create the export tables in {schema}")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "t", "1")
