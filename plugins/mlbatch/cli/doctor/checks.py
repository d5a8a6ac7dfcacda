"""Checks behind ``mlbatch doctor``: every boundary of the configured environment, one result each
(the app DB's in :mod:`mlbatch.cli.doctor.appdb`, ECS's in
:mod:`mlbatch.cli.doctor.ecs`).

Each check touches its boundary the way the pipeline does (same hooks, same connections) and
answers with a :class:`Check`: ``ok``, ``FAIL`` (with the fix), ``warn`` (it could not be
checked; the line says what to check by hand) or ``skip`` (the boundary is not configured here,
e.g. ECS with the local launcher). Only ``FAIL`` makes the command exit 1.

The checks only read, except the object store's, which write and delete a probe object under
each prefix a run writes (``<prefix><model>/_mlbatch_doctor/``, tagged ``mlbatch:probe=doctor``
for the bucket's lifecycle rule), and the label sheet's, which
rewrites one header cell with the text it holds (:mod:`mlbatch.cli.doctor.sheets`).
AWS clients are arguments so tests can hand in a stub validated
against botocore's models (ECS and Redshift cannot run here).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from airflow.models.pool import Pool
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.sdk import BaseHook

from mlbatch.airflow.pools import GPU_POOL, POOLS, counts_deferred, shared_pools_on
from mlbatch.backends.env import Environment
from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse
from mlbatch.backends.warehouse.redshift import RedshiftConfig, RedshiftWarehouse
from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.cli.doctor.redshift import check_redshift_access
from mlbatch.spec import ModelSpec, SheetSource

PROBE_PREFIX = "_mlbatch_doctor/"
SHEETS_KEY_ENV = "MLBATCH_SHEETS_SERVICE_ACCOUNT_JSON"  # mlbatch.labels.sheets.ENV_KEY_JSON (a test keeps them equal)


# --- Airflow connections -------------------------------------------------------------------------


def named_connections(env: Environment, specs: Iterable[ModelSpec]) -> dict[str, str]:
    """conn_id -> what uses it, for every Airflow connection this configuration names."""
    names: dict[str, str] = {}
    if env.appdb_conn_id:
        names[env.appdb_conn_id] = "app DB (MLBATCH_APPDB_CONN_ID)"
    if os.environ.get("MLBATCH_AWS_CONN_ID"):
        names[os.environ["MLBATCH_AWS_CONN_ID"]] = "S3 / ECS (MLBATCH_AWS_CONN_ID)"
    elif env.launcher_kind == "ecs":
        names["aws_default"] = "ECS and CloudWatch Logs (MLBATCH_AWS_CONN_ID unset)"
    if env.warehouse_url.startswith("redshift://"):
        names[env.warehouse_url.removeprefix("redshift://").strip("/")] = "Redshift (MLBATCH_WAREHOUSE)"
    # Sheets fall back to a key JSON in the environment when their connection is missing.
    if not os.environ.get(SHEETS_KEY_ENV):
        for spec in specs:
            if isinstance(spec.labels.source, SheetSource):
                names.setdefault(spec.labels.source.conn_id, f"label sheet of {spec.name}")
    return names


def check_connections(env: Environment, specs: list[ModelSpec]) -> Check:

    names = named_connections(env, specs)
    if not names:
        return Check("connections", "ok", "none named (embedded stack: no credentials needed)")
    missing = []
    for conn_id, user in names.items():
        try:
            BaseHook.get_connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - not found, secrets backend down: both mean "missing"
            missing.append(f"{conn_id} ({user}): {describe_error(exc)}")
    if missing:
        return Check(
            "connections",
            "FAIL",
            "cannot read " + "; ".join(missing),
            "create them (`airflow connections add`, a secrets backend, or AIRFLOW_CONN_<ID> variables)",
        )
    return Check("connections", "ok", "resolve: " + ", ".join(f"{c} ({u})" for c, u in names.items()))


# --- warehouse -----------------------------------------------------------------------------------


def check_warehouse(env: Environment, redshift_client: Any = None, specs: list[ModelSpec] | None = None) -> list[Check]:
    if env.warehouse_url.startswith("duckdb://"):
        try:
            duck = env.warehouse  # opening it may fail too: reported like the query
            assert isinstance(duck, DuckDBWarehouse)  # what get_warehouse makes of a duckdb:// URL
            value = duck.query("select 1")[0][0]
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal to the doctor
            return [
                Check(
                    "warehouse",
                    "FAIL",
                    f"DuckDB {env.warehouse_url}: {describe_error(exc)}",
                    "run `mlbatch demo` to build the embedded warehouse, or set MLBATCH_WAREHOUSE",
                )
            ]
        return [Check("warehouse", "ok" if value == 1 else "FAIL", f"DuckDB {env.warehouse_url} answers select 1")]
    return _check_redshift(env, redshift_client, specs or [])


def _check_redshift(env: Environment, client: Any, specs: list[ModelSpec]) -> list[Check]:

    wh = env.warehouse
    assert isinstance(wh, RedshiftWarehouse)  # get_warehouse: every URL but duckdb:// is redshift://
    try:
        config = wh.config
        value = wh.query_value("select 1")
    except Exception as exc:  # noqa: BLE001
        return [
            Check(
                "warehouse",
                "FAIL",
                f"Redshift Data API via connection {wh.conn_id!r}: {describe_error(exc)}",
                "check the connection's extras (cluster_identifier or workgroup_name, database, db_user or "
                "secret_arn) and that the workers' role may call redshift-data:ExecuteStatement",
            )
        ]
    target = config.cluster_identifier or f"workgroup {config.workgroup_name}"
    first = Check("warehouse", "ok" if str(value) == "1" else "FAIL", f"Redshift {target} answers select 1")
    checks = [first, _check_redshift_role(config, client or _redshift_client(wh, config))]

    # The probes are short statements: poll for them every second, not at the stages' pace.
    wh.poll_interval = min(wh.poll_interval, 1.0)
    return checks + check_redshift_access(wh, specs)


def _redshift_client(wh: RedshiftWarehouse, config: RedshiftConfig) -> Any:  # a boto3 client

    kind = "redshift" if config.cluster_identifier else "redshift-serverless"
    return AwsBaseHook(aws_conn_id=wh.conn_id, client_type=kind).conn


def _check_redshift_role(config: RedshiftConfig, client: Any) -> Check:
    """UNLOAD and COPY run as ``iam_role``: it must be attached to the cluster (or namespace)."""
    role = config.iam_role
    try:
        if config.cluster_identifier:
            cluster = client.describe_clusters(ClusterIdentifier=config.cluster_identifier)["Clusters"][0]
            attached = {r["IamRoleArn"]: r.get("ApplyStatus", "") for r in cluster.get("IamRoles", [])}
            where = f"cluster {config.cluster_identifier}"
        else:
            group = client.get_workgroup(workgroupName=config.workgroup_name)["workgroup"]
            namespace = client.get_namespace(namespaceName=group["namespaceName"])["namespace"]
            # The serverless API renders each role as "IamRole(applyStatus=in-sync, iamRoleArn=arn:...)".
            attached = {}
            for text in namespace.get("iamRoles", []):
                arn = re.search(r"iamRoleArn=([^,)]+)", text)
                status = re.search(r"applyStatus=([^,)]+)", text)
                attached[arn.group(1) if arn else text] = status.group(1) if status else ""
            where = f"namespace {group['namespaceName']}"
    except Exception as exc:  # noqa: BLE001 - e.g. AccessDenied: the workers need not be allowed to look
        return Check(
            "warehouse role",
            "warn",
            f"cannot check that {role} is attached ({describe_error(exc)})",
            "check by hand that the role is attached to the cluster/namespace and may s3:GetObject/PutObject "
            "on the bucket (docs/deploy.md); or allow redshift:DescribeClusters to check here",
        )
    if role not in attached:
        return Check(
            "warehouse role",
            "FAIL",
            f"{role} is not attached to {where} (attached: {', '.join(attached) or 'none'}): UNLOAD/COPY would fail",
            f"attach it: aws redshift modify-cluster-iam-roles --add-iam-roles {role} (or the namespace's IAM roles)",
        )
    if attached[role] not in ("", "in-sync"):
        return Check("warehouse role", "FAIL", f"{role} on {where} is {attached[role]!r}", "wait until in-sync")
    return Check("warehouse role", "ok", f"{role} is attached to {where} (UNLOAD/COPY may assume it)")


# --- pools ------------------------------------------------------------------------------------------


class PoolInfo(Protocol):
    """What the checks read of a pool (Airflow's ``Pool``; ``include_deferred`` read if it has one)."""

    @property
    def slots(self) -> int: ...


def check_gpu_pool(
    specs: list[ModelSpec], launcher_kind: str = "local", get_pool: Callable[[str], PoolInfo | None] | None = None
) -> Check:

    needed = max((r.gpu for s in specs for r in (s.train.resources, s.score.resources)), default=0)
    if needed == 0:
        return Check("GPU pool", "skip", "no job asks for a GPU")
    return _pool_check(
        "GPU pool", GPU_POOL, launcher_kind, get_pool, least=needed, what=f"the largest GPU job needs {needed}"
    )


def check_pools(
    specs: list[ModelSpec], launcher_kind: str = "local", get_pool: Callable[[str], PoolInfo | None] | None = None
) -> list[Check]:
    """The GPU pool, and the shared servers' pools the DAGs' tasks take (mlbatch.airflow.pools)."""

    checks = [check_gpu_pool(specs, launcher_kind, get_pool)]
    if shared_pools_on():
        for pool in POOLS:
            label = f"pool {pool.name.removeprefix('mlbatch_')}"
            checks.append(_pool_check(label, pool.name, launcher_kind, get_pool, least=1, what=pool.description))
    return checks


def _pool_check(
    label: str, name: str, launcher_kind: str, get_pool: Callable[[str], PoolInfo | None] | None, least: int, what: str
) -> Check:
    """One pool: it exists, has at least ``least`` slots, and counts deferred tasks when it should."""

    fix = "python -m mlbatch.airflow.pools (runs `airflow pools set`; --json: the REST API's upsert)"
    try:
        pool = (get_pool or _airflow_pool)(name)
    except Exception as exc:  # noqa: BLE001 - no metadata DB here (a CLI on a laptop): cannot check
        return Check(
            label,
            "warn",
            f"Airflow's metadata DB is not reachable, cannot check pool {name} ({describe_error(exc)})",
            f"run where Airflow's DB is configured, or check with `airflow pools get {name}`",
        )
    if pool is None:
        # `mlbatch demo` runs DAGs with dag.test(), which ignores pools: only a scheduler needs it.
        return Check(
            label,
            "warn" if launcher_kind == "local" else "FAIL",
            f"pool {name} does not exist: a scheduler would never run its tasks"
            + (" (mlbatch demo's dag.test ignores pools)" if launcher_kind == "local" else ""),
            fix,
        )
    if pool.slots < least:
        return Check(label, "FAIL", f"pool {name} has {pool.slots} slot(s), {what}", fix)
    if counts_deferred(name) and not getattr(pool, "include_deferred", True):
        return Check(
            label,
            "FAIL",
            f"pool {name} does not count deferred tasks: a job or statement waiting in the triggerer would "
            "free its slot while it still runs",
            fix,
        )
    return Check(label, "ok", f"pool {name} has {pool.slots} slot(s) ({what})")


def _airflow_pool(name: str) -> PoolInfo | None:

    return Pool.get_pool(name)


# --- all of them -------------------------------------------------------------------------------------
