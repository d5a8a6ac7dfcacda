"""``mlbatch doctor``'s app DB checks: it connects, and then the backend's own checks
(:data:`BACKEND_CHECKS`): on MySQL (Aurora) the user's privileges and what a publish needs to load
data (``local_infile``, or Aurora's role for LOAD DATA FROM S3: the cluster's S3 role here, the
database role that grants the load in :mod:`mlbatch.cli.doctor.aurora_role`); on PostgreSQL (Aurora
PostgreSQL) the user's privileges (:mod:`mlbatch.cli.doctor.appdb_postgres`); SQLite, a file, has none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlbatch.backends.env import LOAD_FROM_S3_ENV, Environment
from mlbatch.cli.doctor.appdb_postgres import postgres_checks
from mlbatch.cli.doctor.aurora_role import load_role_check
from mlbatch.cli.doctor.check import Check, describe_error

if TYPE_CHECKING:
    from mlbatch.backends.appdb.hook import AppDbHook

# What the label sync, registry and publish run on the app DB (publish: CREATE TABLE ... LIKE,
# LOAD DATA into side tables, RENAME TABLE swaps, DROP of the old tables; ensure_schema: indexes).
APPDB_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX")


def check_appdb(env: Environment) -> list[Check]:
    try:
        db = env.appdb
        where = repr(db)
        with db.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        source = f"connection {env.appdb_conn_id}" if env.appdb_conn_id else "MLBATCH_APPDB_URL"
        fix = f"check {source}: host, port, user and password"
        if "Access denied" in str(exc) or "password authentication failed" in str(exc):
            fix = f"the password or user of {source} is wrong (or the user lacks access from this host)"
        return [Check("app DB", "FAIL", f"cannot connect: {describe_error(exc)}", fix)]
    backend_checks = BACKEND_CHECKS.get(db.dialect)
    if backend_checks is None:
        return [Check("app DB", "ok", f"{where} connects (SQLite: no privileges to check)")]
    try:
        return [Check("app DB", "ok", f"{where} connects"), *backend_checks(db)]
    finally:
        db.dispose()


def _mysql_checks(db: AppDbHook) -> list[Check]:
    with db.connect() as conn:
        database: str = conn.exec_driver_sql("SELECT DATABASE()").scalar_one()  # one row, always
        user: str = conn.exec_driver_sql("SELECT CURRENT_USER()").scalar_one()
        grants = [row[0] for row in conn.exec_driver_sql("SHOW GRANTS")]
        variables: dict[str, str] = dict(
            conn.exec_driver_sql(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('local_infile', 'aurora_load_from_s3_role', 'aws_default_s3_role', 'lock_wait_timeout')"
            ).fetchall()
        )
    checks = [privileges_check(grants, database, user), load_check(variables)]
    if os.environ.get(LOAD_FROM_S3_ENV) == "1":
        checks.append(load_role_check(db, grants, user))
    return checks


# The app DB backend (SQLAlchemy's name) -> its checks once it connects; SQLite has none.
BACKEND_CHECKS: dict[str, Callable[[AppDbHook], list[Check]]] = {
    "mysql": _mysql_checks,
    "postgresql": postgres_checks,
}

_GRANT = re.compile(r"^GRANT (?P<privs>.+?) ON (?P<scope>\S+) TO ", re.IGNORECASE)


def granted_privileges(grants: list[str], database: str) -> set[str]:
    """The privileges ``SHOW GRANTS`` lines give on ``database`` (global or schema-level)."""
    have: set[str] = set()
    for line in grants:
        m = _GRANT.match(line)
        if not m:
            continue
        schema, _, table = m.group("scope").rpartition(".")
        schema = schema.strip("`")
        if table != "*" or (schema != "*" and not _like(schema, database)):  # table grants cannot create tables
            continue
        for priv in m.group("privs").split(","):
            priv = re.sub(r"\s*\(.*\)$", "", priv.strip().upper())  # column lists: GRANT SELECT (a) ...
            have.add("ALL" if priv in ("ALL", "ALL PRIVILEGES") else priv)
    return have


def _like(pattern: str, name: str) -> bool:
    """A schema name in a grant is a LIKE pattern: ``%`` and ``_`` are wildcards, ``\\_`` a literal."""
    regex, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            regex, i = regex + re.escape(pattern[i + 1]), i + 2
            continue
        regex += ".*" if c == "%" else "." if c == "_" else re.escape(c)
        i += 1
    return re.fullmatch(regex, name) is not None


def privileges_check(grants: list[str], database: str, user: str) -> Check:
    have = granted_privileges(grants, database)
    missing = [] if "ALL" in have else [p for p in APPDB_PRIVILEGES if p not in have]
    if missing:
        roles = [g for g in grants if " ON " not in g.upper()]
        note = "; privileges of granted roles are not resolved here" if roles else ""
        return Check(
            "app DB grants",
            "FAIL",
            f"{user} lacks {', '.join(missing)} on `{database}` (label sync, registry and publish need "
            f"{', '.join(APPDB_PRIVILEGES)}{note})",
            f"GRANT {', '.join(missing)} ON `{database}`.* TO {user}",
        )
    return Check("app DB grants", "ok", f"{user} has {', '.join(APPDB_PRIVILEGES)} on `{database}`")


def load_check(variables: dict[str, str]) -> Check:
    """Publish bulk-loads with LOAD DATA LOCAL INFILE, or FROM S3 when MLBATCH_AURORA_LOAD_FROM_S3=1."""
    if os.environ.get(LOAD_FROM_S3_ENV) == "1":
        role = variables.get("aurora_load_from_s3_role") or variables.get("aws_default_s3_role")
        if not role:
            return Check(
                "app DB load",
                "FAIL",
                f"{LOAD_FROM_S3_ENV}=1 but the cluster has no aurora_load_from_s3_role (nor aws_default_s3_role)",
                "set aurora_load_from_s3_role in the cluster parameter group to a role that may read the bucket, "
                "and add that role to the cluster",
            )
        return Check("app DB load", "ok", f"LOAD DATA FROM S3 may use {role}")
    value = str(variables.get("local_infile", "")).upper()
    if value not in ("1", "ON"):
        return Check(
            "app DB load",
            "FAIL",
            f"local_infile is {value or 'unknown'}: publish's LOAD DATA LOCAL INFILE would fail (error 4166/1148)",
            "set local_infile=1 in the DB parameter group (Aurora: cluster parameter group; "
            f"or load from S3: {LOAD_FROM_S3_ENV}=1 with aurora_load_from_s3_role)",
        )
    return Check("app DB load", "ok", "local_infile is ON (publish's LOAD DATA LOCAL INFILE)")
