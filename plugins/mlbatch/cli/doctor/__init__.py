"""``mlbatch doctor``: every boundary of the configured environment, one result each.

:func:`run_checks` (here) runs every check; :mod:`mlbatch.cli.doctor.checks` holds the
connections', warehouse's and pools' checks; the probes of each write
path the first run takes are beside it: :mod:`~mlbatch.cli.doctor.appdb` and
:mod:`~mlbatch.cli.doctor.aurora_role` (the app DB), :mod:`~mlbatch.cli.doctor.redshift` (EXPLAIN and
grants), :mod:`~mlbatch.cli.doctor.s3` (every prefix), :mod:`~mlbatch.cli.doctor.sheets` (the verdict
column), :mod:`~mlbatch.cli.doctor.iam` (IAM's policy simulator), :mod:`~mlbatch.cli.doctor.ecs` (each model's
task-definition families, placement). The names below are what the
command and the tests use.
"""

from collections.abc import Callable

from mlbatch.backends.env import LOAD_FROM_S3_ENV, Environment
from mlbatch.cli.doctor.appdb import (
    APPDB_PRIVILEGES,
    check_appdb,
    granted_privileges,
    load_check,
    privileges_check,
)
from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.cli.doctor.checks import (
    SHEETS_KEY_ENV,
    _check_redshift_role,
    check_connections,
    check_gpu_pool,
    check_pools,
    check_warehouse,
    named_connections,
)
from mlbatch.cli.doctor.ecs import check_ecs
from mlbatch.cli.doctor.iam import check_iam
from mlbatch.cli.doctor.redshift import check_redshift_access
from mlbatch.cli.doctor.s3 import check_object_store
from mlbatch.cli.doctor.sheets import check_sheets
from mlbatch.spec import ModelSpec

__all__ = [
    "APPDB_PRIVILEGES",
    "LOAD_FROM_S3_ENV",
    "SHEETS_KEY_ENV",
    "Check",
    "_check_redshift_role",
    "check_appdb",
    "check_connections",
    "check_ecs",
    "check_gpu_pool",
    "check_iam",
    "check_object_store",
    "check_pools",
    "check_redshift_access",
    "check_sheets",
    "check_warehouse",
    "granted_privileges",
    "load_check",
    "named_connections",
    "privileges_check",
    "run_checks",
]


def run_checks(env: Environment, specs: list[ModelSpec]) -> list[Check]:
    """Every boundary, in the order data flows; a check that crashes is a FAIL, not a traceback."""
    results: list[Check] = []
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("connections", lambda: check_connections(env, specs)),
        ("warehouse", lambda: check_warehouse(env, specs=specs)),
        ("object store", lambda: check_object_store(env, specs)),
        ("app DB", lambda: check_appdb(env)),
        ("ECS", lambda: check_ecs(env, specs=specs)),
        ("IAM", lambda: check_iam(env, specs=specs)),
        ("label sheet", lambda: check_sheets(specs)),
        ("pools", lambda: check_pools(specs, env.launcher_kind)),
    ]
    for boundary, step in steps:
        try:
            got = step()
        except Exception as exc:  # noqa: BLE001
            got = Check(boundary, "FAIL", f"the check itself failed: {describe_error(exc)}", "see `mlbatch doctor -v`")
        results.extend(got if isinstance(got, list) else [got])
    return results
