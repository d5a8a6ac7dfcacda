"""``mlbatch doctor``: every boundary of the configured environment, one result each.

:mod:`mlbatch.doctor.checks` holds the checks and :func:`run_checks`; the probes of each write
path the first run takes are beside it: :mod:`~mlbatch.doctor.appdb` and
:mod:`~mlbatch.doctor.aurora_role` (the app DB), :mod:`~mlbatch.doctor.redshift` (EXPLAIN and
grants), :mod:`~mlbatch.doctor.s3` (every prefix), :mod:`~mlbatch.doctor.sheets` (the verdict
column), :mod:`~mlbatch.doctor.iam` (IAM's policy simulator), :mod:`~mlbatch.doctor.ecs` (each model's
task-definition families, placement). The names below are what the
command and the tests use.
"""

from mlbatch.doctor.appdb import (
    APPDB_PRIVILEGES,
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
    check_gpu_pool,
    check_pools,
    check_warehouse,
    named_connections,
    run_checks,
)
from mlbatch.doctor.ecs import check_ecs
from mlbatch.doctor.iam import check_iam
from mlbatch.doctor.redshift import check_redshift_access
from mlbatch.doctor.s3 import check_object_store
from mlbatch.doctor.sheets import check_sheets
from mlbatch.env import LOAD_FROM_S3_ENV

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
