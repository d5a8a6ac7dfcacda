"""``mlbatch doctor``'s IAM probes: IAM's policy simulator (``iam:SimulatePrincipalPolicy``) asked
whether the Airflow worker's principal may make the AWS calls a run makes, on the resources it
makes them on, without making any of them (the other lines probe what can be probed for real):

* ECS launcher: ``ecs:RunTask`` on each model's train and score family the launcher runs
  (:func:`mlbatch.cli.doctor.ecs.job_family`; the ARN of its latest revision, as
  DescribeTaskDefinition returns it; ``ecs:cluster`` in the context; a family not registered is
  left out, its ``ECS <kind> <model>`` line FAILs) and ``ecs:TagResource`` on
  the task it creates (its tags name the Airflow task); ``iam:PassRole`` on their task and
  execution roles, passed to ``ecs-tasks.amazonaws.com`` (RunTask fails without it, after a green
  DescribeTaskDefinition); ``ecs:DescribeTasks``, ``ecs:StopTask``, ``ecs:ListTasks`` (reattach),
  ``ecs:DescribeTaskDefinition``; ``logs:GetLogEvents`` on the task definitions' log group;
* Redshift: the Data API calls the doctor does not make itself (``BatchExecuteStatement``: the
  export's one transaction; ``CancelStatement``: a killed task's);
* S3: ``s3:AbortMultipartUpload`` (a failed large upload; the probe objects are too small).

The principal is the caller's (STS ``GetCallerIdentity``; an assumed role is mapped back to its
role ARN, path included, with ``iam:GetRole``), or ``MLBATCH_DOCTOR_PRINCIPAL_ARN`` when the
doctor runs as someone else (an admin's laptop) on the workers' behalf.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from mlbatch.backends.env import Environment
from mlbatch.backends.launchers.ecs import EcsConfig
from mlbatch.backends.store import aws_conn_id
from mlbatch.backends.warehouse.redshift import RedshiftWarehouse
from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.cli.doctor.ecs import JOB_KINDS, job_family
from mlbatch.spec import ModelSpec

if TYPE_CHECKING:
    from mlbatch.backends.launchers.ecs import EcsConfig

PRINCIPAL_ENV = "MLBATCH_DOCTOR_PRINCIPAL_ARN"
PROBE_KEY = "_mlbatch_doctor/multipart"  # an object key the simulation names; nothing is written
_ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/")
_TD_ARN = re.compile(r"^arn:(aws[a-z-]*):ecs:([a-z0-9-]+):(\d{12}):task-definition/")


Probe = tuple[str, str, list[str], dict[str, str]]  # (boundary, action, resources, context)


def check_iam(
    env: Environment, clients: dict[str, Any] | None = None, specs: list[ModelSpec] | None = None
) -> list[Check]:
    """``clients``: {"ecs", "iam", "sts"} boto3 clients (tests); else the AWS connection's.
    ``specs``: the models whose task-definition families RunTask is simulated on."""
    aws = env.store.root.startswith("s3://") or env.warehouse_url.startswith("redshift://")
    if not aws and env.launcher_kind != "ecs":
        return [Check("IAM", "skip", "no AWS service is configured (the embedded stack)")]
    try:
        clients = clients or _clients()
        principal = worker_principal(clients["sts"], clients["iam"])
        probes = _s3_probes(env, principal) + _redshift_probes(env, principal, clients["sts"])
        probes += _ecs_probes(env, clients["ecs"], specs or [])
    except Exception as exc:  # noqa: BLE001 - the ECS lines say which task definition is missing
        return [Check("IAM", "warn", f"cannot gather what to simulate: {describe_error(exc)}", _SIMULATE_FIX)]
    try:
        return _simulate_all(clients["iam"], principal, probes)
    except Exception as exc:  # noqa: BLE001 - e.g. AccessDenied on iam:SimulatePrincipalPolicy
        return [Check("IAM", "warn", f"cannot simulate {principal}'s policies: {describe_error(exc)}", _SIMULATE_FIX)]


_SIMULATE_FIX = (
    "allow iam:SimulatePrincipalPolicy (and iam:GetRole) on the workers' role to the workers' role, or run "
    f"mlbatch doctor as an admin with {PRINCIPAL_ENV}=<the workers' role ARN>"
)


def _clients() -> dict[str, Any]:

    conn_id = aws_conn_id() or os.environ.get("MLBATCH_AWS_CONN_ID") or "aws_default"
    region = os.environ.get("MLBATCH_AWS_REGION") or None

    def client(kind: str) -> Any:
        return AwsBaseHook(aws_conn_id=conn_id, client_type=kind, region_name=region).conn

    return {"ecs": client("ecs"), "iam": client("iam"), "sts": client("sts")}


def _partition(principal: str) -> str:
    return principal.split(":")[1] if principal.startswith("arn:") else "aws"


def _s3_probes(env: Environment, principal: str) -> list[Probe]:
    if not env.store.root.startswith("s3://"):
        return []
    bucket_and_root = env.store.root.removeprefix("s3://").rstrip("/")
    obj = f"arn:{_partition(principal)}:s3:::{bucket_and_root}/{PROBE_KEY}"
    return [("S3 IAM", "s3:AbortMultipartUpload", [obj], {})]


def _redshift_probes(env: Environment, principal: str, sts: Any) -> list[Probe]:
    if not env.warehouse_url.startswith("redshift://"):
        return []

    wh = env.warehouse
    assert isinstance(wh, RedshiftWarehouse)  # what get_warehouse makes of a redshift:// URL
    config = wh.config
    account = principal.split(":")[4] if principal.count(":") >= 5 else "*"
    region = sts.meta.region_name or "*"
    target = (
        f"arn:{_partition(principal)}:redshift:{region}:{account}:cluster:{config.cluster_identifier}"
        if config.cluster_identifier
        else "*"
    )
    return [
        ("Redshift IAM", "redshift-data:ExecuteStatement", [target], {}),
        ("Redshift IAM", "redshift-data:BatchExecuteStatement", [target], {}),
        ("Redshift IAM", "redshift-data:DescribeStatement", ["*"], {}),
        ("Redshift IAM", "redshift-data:GetStatementResult", ["*"], {}),
        ("Redshift IAM", "redshift-data:CancelStatement", ["*"], {}),
    ]


def _ecs_probes(env: Environment, ecs: Any, specs: list[ModelSpec]) -> list[Probe]:
    if env.launcher_kind != "ecs":
        return []

    try:
        config = EcsConfig.from_env()
    except ValueError:
        return []  # the ECS line says what is missing
    # The families the launcher runs (the same call as the ECS lines), each once.
    families = list(dict.fromkeys(job_family(config, spec, kind) for spec in specs for kind in JOB_KINDS))
    tds = []
    for family in families:
        try:
            tds.append(ecs.describe_task_definition(taskDefinition=family)["taskDefinition"])
        except Exception:  # noqa: BLE001, S112 - not registered: its ECS line FAILs with the fix
            continue
    return _probes(config, tds) if tds else []


def worker_principal(sts: Any, iam: Any) -> str:
    """The IAM ARN whose policies decide what the worker may do."""
    explicit = os.environ.get(PRINCIPAL_ENV)
    if explicit:
        return explicit
    arn: str = sts.get_caller_identity()["Arn"]
    m = _ASSUMED.match(arn)
    if not m:
        return arn  # an IAM user
    partition, account, role = m.groups()
    try:
        role_arn: str = iam.get_role(RoleName=role)["Role"]["Arn"]  # with its path, which the STS ARN drops
        return role_arn
    except Exception:  # noqa: BLE001 - no iam:GetRole: a role without a path is the common case
        return f"arn:{partition}:iam::{account}:role/{role}"


def _probes(config: EcsConfig, tds: list[dict[str, Any]]) -> list[Probe]:
    """(boundary, action, resources, context) for every call the ECS launcher makes."""
    arn = _TD_ARN.match(tds[0]["taskDefinitionArn"])
    assert arn is not None, tds[0]["taskDefinitionArn"]  # DescribeTaskDefinition's ARN
    partition, region, account = arn.groups()
    ecs = f"arn:{partition}:ecs:{region}:{account}"
    cluster = f"{ecs}:cluster/{config.cluster}"
    task = f"{ecs}:task/{config.cluster}/mlbatch-doctor"  # any task of the cluster
    roles = sorted({r for td in tds for r in (td.get("taskRoleArn"), td.get("executionRoleArn")) if r})
    groups = sorted(
        {config.log_group} if config.log_group else {g for td in tds for g in _log_groups(td)},
    )
    probes = [
        ("ECS RunTask", "ecs:RunTask", [td["taskDefinitionArn"] for td in tds], {"ecs:cluster": cluster}),
        # RunTask with tags (the launcher names the Airflow task in them) also needs TagResource.
        ("ECS RunTask", "ecs:TagResource", [task], {"ecs:CreateAction": "RunTask", "ecs:cluster": cluster}),
        ("ECS PassRole", "iam:PassRole", roles, {"iam:PassedToService": "ecs-tasks.amazonaws.com"}),
        ("ECS tasks", "ecs:DescribeTasks", [task], {"ecs:cluster": cluster}),
        ("ECS tasks", "ecs:StopTask", [task], {"ecs:cluster": cluster}),
        (
            "ECS tasks",
            "ecs:ListTasks",
            [f"{ecs}:container-instance/{config.cluster}/mlbatch-doctor"],
            {"ecs:cluster": cluster},
        ),
        ("ECS tasks", "ecs:DescribeTaskDefinition", ["*"], {}),
    ]
    logs = [f"arn:{partition}:logs:{region}:{account}:log-group:{g}:log-stream:mlbatch-doctor" for g in groups]
    return probes + ([("ECS logs", "logs:GetLogEvents", logs, {})] if logs else [])


def _log_groups(td: dict[str, Any]) -> list[str]:
    return [
        c["logConfiguration"]["options"]["awslogs-group"]
        for c in td.get("containerDefinitions", [])
        if c.get("logConfiguration", {}).get("options", {}).get("awslogs-group")
    ]


def _decisions(iam: Any, principal: str, action: str, resources: list[str], context: dict[str, str]) -> dict[str, str]:
    entries = [{"ContextKeyName": k, "ContextKeyValues": [v], "ContextKeyType": "string"} for k, v in context.items()]
    answer = iam.simulate_principal_policy(
        PolicySourceArn=principal, ActionNames=[action], ResourceArns=resources, ContextEntries=entries
    )
    found: dict[str, str] = {}
    for result in answer["EvaluationResults"]:
        # IAM answers per resource either at the top level or in ResourceSpecificResults.
        for specific in result.get("ResourceSpecificResults") or []:
            found[specific["EvalResourceName"]] = specific["EvalResourceDecision"]
        found.setdefault(result.get("EvalResourceName", "*"), result["EvalDecision"])
    return {r: found.get(r, found.get("*", "implicitDeny")) for r in resources}


def _simulate_all(iam: Any, principal: str, probes: list[Probe]) -> list[Check]:
    results: dict[str, list[tuple[str, str, str]]] = {}  # boundary -> (action, resource, decision)
    for boundary, action, resources, context in probes:
        for resource, decision in _decisions(iam, principal, action, resources, context).items():
            results.setdefault(boundary, []).append((action, resource, decision))
    return [_verdict(boundary, principal, rows) for boundary, rows in results.items()]


def _verdict(boundary: str, principal: str, rows: list[tuple[str, str, str]]) -> Check:
    denied = [(a, r, d) for a, r, d in rows if d != "allowed"]
    if not denied:
        return Check(boundary, "ok", f"{principal} may {', '.join(dict.fromkeys(a for a, _, _ in rows))}")
    detail = f"{principal} may not " + "; ".join(f"{a} on {r} ({d})" for a, r, d in denied)
    actions = ", ".join(dict.fromkeys(a for a, _, _ in denied))
    resources = ", ".join(dict.fromkeys(r for _, r, _ in denied))
    condition = " with iam:PassedToService ecs-tasks.amazonaws.com" if boundary == "ECS PassRole" else ""
    explicit = " and remove the explicit Deny" if any(d == "explicitDeny" for _, _, d in denied) else ""
    fix = f"allow {actions} on {resources}{condition} to {principal}{explicit} (docs/deploy.md, {boundary})"
    return Check(boundary, "FAIL", detail, fix)
