"""``mlbatch doctor``: every boundary of the configured environment, one result each.

:mod:`mlbatch.doctor.checks` holds the checks and :func:`run_checks`; the app DB's are in
:mod:`mlbatch.doctor.appdb`. The names below are what the command and the tests use.
"""

from mlbatch.doctor.appdb import (
    APPDB_PRIVILEGES,
    LOAD_FROM_S3_ENV,
    check_appdb,
    granted_privileges,
    load_check,
    privileges_check,
)
from mlbatch.doctor.checks import (
    SHEETS_KEY_ENV,
    Check,
    _check_redshift_role,
    check_connections,
    check_ecs,
    check_gpu_pool,
    check_warehouse,
    named_connections,
    run_checks,
)
from mlbatch.doctor.s3 import check_object_store
from mlbatch.doctor.sheets import check_sheets

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
    "check_object_store",
    "check_sheets",
    "check_warehouse",
    "granted_privileges",
    "load_check",
    "named_connections",
    "privileges_check",
    "run_checks",
]
