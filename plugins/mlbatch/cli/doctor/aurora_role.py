"""``mlbatch doctor``'s probe of Aurora's LOAD DATA FROM S3 privilege, as a load session gets it.

Aurora MySQL 3 grants the load through the role ``AWS_LOAD_S3_ACCESS``, and a granted role is
not active in a session until ``SET ROLE`` (or the cluster parameter
``activate_all_roles_on_login=1``): the user's grants can look right while every load is
refused. So the probe opens a session as the publish does, runs the ``SET ROLE`` the publish
runs when the app DB connection's extra ``aurora_load_role`` (or ``MLBATCH_AURORA_LOAD_ROLE``)
names one, and reads ``CURRENT_ROLE()``. Aurora MySQL 2 has no roles: there the user needs the
``LOAD FROM S3`` privilege itself, read from ``SHOW GRANTS``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mlbatch.backends.appdb.connection import LOAD_ROLE_ENV
from mlbatch.cli.doctor.check import Check, describe_error

DEFAULT_LOAD_ROLE = "AWS_LOAD_S3_ACCESS"
BOUNDARY = "app DB load role"


def configured_role(db: Any) -> str | None:
    """The role a load session activates: the hook's (connection extra, else the environment)."""
    return getattr(db, "load_role", None) or os.environ.get(LOAD_ROLE_ENV) or None


def active_roles(current_role: str | None) -> set[str]:
    """Role names of ``CURRENT_ROLE()``: MySQL's "`r`@`%`,`s`@`%`" or "NONE", MariaDB's "r" or NULL."""
    if not current_role or current_role.upper() == "NONE":
        return set()
    return {re.sub(r"@.*$", "", part.strip()).strip("`'\"").lower() for part in current_role.split(",")}


def load_role_check(db: Any, grants: list[str], user: str) -> Check:
    role = configured_role(db)
    want = role or DEFAULT_LOAD_ROLE
    quoted = "`" + want.replace("`", "``") + "`"
    fix_grant = f"GRANT {want} TO {user}"
    with db.connect() as conn:
        try:
            current = conn.exec_driver_sql("SELECT CURRENT_ROLE()").scalar()
        except Exception:  # noqa: BLE001 - Aurora MySQL 2 (5.7) has no roles
            return _privilege_check(grants, user)
        if role:
            try:
                conn.exec_driver_sql(f"SET ROLE {quoted}")
            except Exception as exc:  # noqa: BLE001 - 3530 (MySQL) / 1959 (MariaDB): not granted
                return Check(BOUNDARY, "FAIL", f"SET ROLE {quoted} fails for {user}: {describe_error(exc)}", fix_grant)
            current = conn.exec_driver_sql("SELECT CURRENT_ROLE()").scalar()
    if want.lower() in active_roles(current):
        how = f"after SET ROLE {quoted}" if role else "at login (activate_all_roles_on_login or a default role)"
        return Check(BOUNDARY, "ok", f"{want} is active in a load session {how}")
    return Check(
        BOUNDARY,
        "FAIL",
        f"{want} is not active in a new session of {user} (CURRENT_ROLE() = {current or 'NONE'}): "
        "every LOAD DATA FROM S3 would be refused",
        f"{fix_grant}; then set the app DB connection's extra aurora_load_role (or {LOAD_ROLE_ENV}) to {want} "
        "so each load session runs SET ROLE, or set activate_all_roles_on_login=1 in the cluster parameter group",
    )


def _privilege_check(grants: list[str], user: str) -> Check:
    if any(re.search(r"\bLOAD FROM S3\b", g, re.IGNORECASE) for g in grants):
        return Check(BOUNDARY, "ok", f"{user} has LOAD FROM S3 (Aurora MySQL 2: no roles)")
    return Check(
        BOUNDARY,
        "FAIL",
        f"{user} lacks LOAD FROM S3 and this server has no roles (Aurora MySQL 2)",
        f"GRANT LOAD FROM S3 ON *.* TO {user}",
    )
