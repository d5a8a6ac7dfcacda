"""``mlbatch doctor``'s app DB grants on PostgreSQL (Aurora PostgreSQL): what the label sync, the
registry and the publish (:mod:`mlbatch.backends.appdb.postgres_publish`) run, asked of the server with
``has_database_privilege``, ``has_schema_privilege`` and ``has_table_privilege``:

* the database: ``CONNECT``, and ``TEMPORARY`` (the publish's COPY goes into a TEMP table);
* the schema the tables live in (``current_schema()``): ``USAGE`` and ``CREATE`` (``ensure_schema``
  creates missing tables, the publish a partition per day);
* every app table already there: ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``; every sequence
  (the label history's id): ``USAGE``;
* every partitioned table (each ``<model>_history``): owned by the user (or a role it is in):
  ``ATTACH PARTITION`` and ``DROP`` of its day partitions are the owner's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection

from mlbatch.cli.doctor.check import Check

if TYPE_CHECKING:
    from mlbatch.backends.appdb.hook import AppDbHook

DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY")
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

# The schema's tables (not the history's day partitions): which privileges the user lacks on each,
# whether it is partitioned (a history) and whether the user may run the owner's DDL on it.
_TABLES = """
SELECT c.relname AS name,
       ARRAY(SELECT p FROM unnest(CAST(%(privileges)s AS text[])) AS p
             WHERE NOT has_table_privilege(c.oid, p)) AS lacks,
       c.relkind = 'p' AS partitioned, pg_has_role(c.relowner, 'USAGE') AS owner
FROM pg_class c
WHERE c.relnamespace = CAST(current_schema() AS regnamespace) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""
# CASE: the planner may test the privilege before the kind, and has_sequence_privilege raises on a table.
_SEQUENCES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = CAST(current_schema() AS regnamespace)
  AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(c.oid, 'USAGE') ELSE false END
ORDER BY c.relname
"""


def postgres_checks(db: AppDbHook) -> list[Check]:
    with db.connect() as conn:
        user, database, schema = conn.exec_driver_sql("SELECT current_user, current_database(), current_schema()").one()
        if schema is None:
            return [
                Check(
                    "app DB grants",
                    "FAIL",
                    f"{user} has no schema to create tables in: search_path names none that exists",
                    f'ALTER ROLE "{user}" SET search_path = public (or a schema of its own)',
                )
            ]
        return [_grants_check(conn, user, database, schema)]


def _grants_check(conn: Connection, user: str, database: str, schema: str) -> Check:
    fixes: list[str] = []
    lacking: list[str] = []
    db_missing = _missing(conn, "has_database_privilege(current_database(), %(p)s)", DATABASE_PRIVILEGES)
    if db_missing:
        lacking.append(f"{', '.join(db_missing)} on database {database}")
        fixes.append(f'GRANT {", ".join(db_missing)} ON DATABASE "{database}" TO "{user}"')
    schema_missing = _missing(conn, "has_schema_privilege(current_schema(), %(p)s)", SCHEMA_PRIVILEGES)
    if schema_missing:
        lacking.append(f"{', '.join(schema_missing)} on schema {schema}")
        fixes.append(f'GRANT {", ".join(schema_missing)} ON SCHEMA "{schema}" TO "{user}"')
    rows = conn.exec_driver_sql(_TABLES, {"privileges": list(TABLE_PRIVILEGES)})
    tables = [(str(name), list(lacks), bool(partitioned), bool(owner)) for name, lacks, partitioned, owner in rows]
    short = sorted({p for _, lacks, _, _ in tables for p in lacks})
    if short:
        names = [name for name, lacks, _, _ in tables if lacks]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        lacking.append(f"{', '.join(short)} on {len(names)} tables ({shown})")
        fixes.append(f'GRANT {", ".join(TABLE_PRIVILEGES)} ON ALL TABLES IN SCHEMA "{schema}" TO "{user}"')
    sequences = [str(r[0]) for r in conn.exec_driver_sql(_SEQUENCES)]
    if sequences:
        lacking.append(f"USAGE on sequences {', '.join(sequences)}")
        fixes.append(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{user}"')
    not_owned = [name for name, _, partitioned, owner in tables if partitioned and not owner]
    if not_owned:
        lacking.append(f"ownership of {', '.join(not_owned)} (the publish attaches and drops its day partitions)")
        fixes += [f'ALTER TABLE "{schema}"."{name}" OWNER TO "{user}"' for name in not_owned]
    if lacking:
        return Check("app DB grants", "FAIL", f"{user} lacks {'; '.join(lacking)}", "; ".join(fixes))
    return Check(
        "app DB grants",
        "ok",
        f"{user} has {', '.join(DATABASE_PRIVILEGES)} on {database}, {', '.join(SCHEMA_PRIVILEGES)} on schema "
        f"{schema}, {', '.join(TABLE_PRIVILEGES)} on its {len(tables)} tables and owns the histories",
    )


def _missing(conn: Connection, test: str, privileges: tuple[str, ...]) -> list[str]:
    return [p for p in privileges if not conn.exec_driver_sql(f"SELECT {test}", {"p": p}).scalar()]
