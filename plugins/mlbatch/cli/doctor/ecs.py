"""``mlbatch doctor``'s ECS lines: the cluster, then for every spec the train and score families
the launcher will run, then whether each job's size places on the configured instance types.

The family is built by the launcher's own :meth:`EcsConfig.family_for` from a request shaped as
the DAG's (model, job kind, GPU count): ``<base>-<model>-<ec2|fargate>`` per model and
compatibility, so the doctor checks exactly what RunTask will name. DescribeTaskDefinition of a
bare family answers its latest ACTIVE revision, the one RunTask runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook

from mlbatch.backends.deploy_checks import FARGATE_PROVIDERS, compatibility_for, placement_warnings
from mlbatch.backends.env import Environment
from mlbatch.backends.launchers.base import JobId, JobRequest
from mlbatch.backends.launchers.ecs import EcsConfig
from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.spec import ModelSpec

if TYPE_CHECKING:
    from mlbatch.backends.launchers.ecs import EcsConfig

INSTANCE_TYPES_ENV = "MLBATCH_ECS_INSTANCE_TYPES"
JOB_KINDS = ("train", "score")


def job_family(config: EcsConfig, spec: ModelSpec, kind: str) -> str:
    """The family the ECS launcher runs for ``spec``'s ``kind`` job (``train`` or ``score``)."""

    resources = getattr(spec, kind).resources
    request = JobRequest(
        job_id=JobId(dag_id=f"{spec.name}__doctor", task_id=kind, run_id="doctor"),
        module=f"jobs.{kind}",
        args=[],
        success_uri="",
        gpu=resources.gpu,
        model=spec.name,
    )
    return config.family_for(request)


def job_compatibility(config: EcsConfig, spec: ModelSpec, kind: str) -> str:
    """``EC2`` or ``FARGATE``: the ``requiresCompatibilities`` the job's capacity provider needs."""

    gpu = getattr(spec, kind).resources.gpu
    provider = config.gpu_capacity_provider if gpu > 0 else config.cpu_capacity_provider
    return compatibility_for(provider).upper()


def check_ecs(env: Environment, ecs_client: Any = None, specs: list[ModelSpec] | None = None) -> list[Check]:
    if env.launcher_kind != "ecs":
        return [Check("ECS", "skip", f"launcher is {env.launcher_kind!r}, not ecs")]

    try:
        config = EcsConfig.from_env()
    except ValueError as exc:
        return [Check("ECS", "FAIL", str(exc), "set the MLBATCH_ECS_* variables (mlbatch.backends.env)")]
    specs = specs or []
    cluster = _cluster_check(config, ecs_client or _ecs_client(config))
    checks = [cluster]
    if cluster.status == "ok":
        client = ecs_client or _ecs_client(config)
        if not specs:
            checks.append(Check("ECS families", "skip", "no model spec: no task-definition family to check"))
        for spec in specs:
            for kind in JOB_KINDS:
                checks.append(_task_definition_check(client, config, spec, kind))
    return checks + placement_checks(config, specs)


def _ecs_client(config: EcsConfig) -> Any:

    return EcsHook(aws_conn_id=config.aws_conn_id, region_name=config.region).conn


def _cluster_check(config: EcsConfig, client: Any) -> Check:
    try:
        answer = client.describe_clusters(clusters=[config.cluster])
    except Exception as exc:  # noqa: BLE001
        return Check(
            "ECS", "FAIL", f"DescribeClusters {config.cluster}: {describe_error(exc)}", "allow ecs:DescribeClusters"
        )
    if not [c for c in answer.get("clusters", []) if c.get("status") == "ACTIVE"]:
        return Check("ECS", "FAIL", f"cluster {config.cluster} not found or not ACTIVE", "create it (docs/deploy.md)")
    return Check("ECS", "ok", f"cluster {config.cluster} is ACTIVE")


def _task_definition_check(client: Any, config: EcsConfig, spec: ModelSpec, kind: str) -> Check:
    boundary = f"ECS {kind} {spec.name}"
    family = job_family(config, spec, kind)
    compat = job_compatibility(config, spec, kind)
    # The command that renders exactly this family (its --compat picks the -ec2/-fargate suffix).
    fix = (
        f"register it: mlbatch ecs task-definitions {spec.name} --kind {kind} --compat {compat.lower()} > td.json; "
        "aws ecs register-task-definition --cli-input-json file://td.json"
    )
    try:
        td = client.describe_task_definition(taskDefinition=family)["taskDefinition"]
    except Exception as exc:  # noqa: BLE001 - ClientException: "Unable to describe task definition."
        return Check(
            boundary, "FAIL", f"task definition family {family} is not registered ({describe_error(exc)})", fix
        )
    arn = td.get("taskDefinitionArn", family)
    if td.get("status") != "ACTIVE":
        return Check(boundary, "FAIL", f"task definition {arn} is {td.get('status')}", fix)
    names = [c.get("name") for c in td.get("containerDefinitions", [])]
    if config.container_name not in names:
        return Check(
            boundary,
            "FAIL",
            f"task definition {arn} has no container {config.container_name!r} (has {names})",
            f"name the container {config.container_name!r} or set MLBATCH_ECS_CONTAINER",
        )
    # Absent requiresCompatibilities means EC2 only (ECS's default); Fargate must be asked for.
    required = td.get("requiresCompatibilities") or ["EC2"]
    if compat not in required:
        provider = "the Fargate capacity provider" if compat == "FARGATE" else "an EC2 capacity provider"
        return Check(
            boundary,
            "FAIL",
            f"task definition {arn} requires {required}, but the job runs on {provider} ({compat})",
            fix,
        )
    return Check(boundary, "ok", f"task definition {arn} is registered ({compat}, container {config.container_name!r})")


def placement_checks(config: EcsConfig, specs: list[ModelSpec]) -> list[Check]:
    """One line per spec: ``warn`` naming the job, its size and the instance types it does not fit."""

    names = [n.strip() for n in os.environ.get(INSTANCE_TYPES_ENV, "").split(",") if n.strip()]
    if not names:
        return [
            Check(
                "ECS placement",
                "skip",
                f"{INSTANCE_TYPES_ENV} is unset: job sizes are not checked against the instance types",
            )
        ]
    fargate = config.cpu_capacity_provider in FARGATE_PROVIDERS
    checks = []
    for spec in specs:
        try:
            warnings = placement_warnings(spec, names, fargate=fargate)
        except ValueError as exc:  # an unknown instance type: one line, the same for every spec
            return [Check("ECS placement", "warn", str(exc), f"fix {INSTANCE_TYPES_ENV} (comma-separated EC2 types)")]
        boundary = f"ECS placement {spec.name}"
        if warnings:
            fix = "give the job less (its spec's resources) or add a larger instance type to the capacity provider"
            checks.append(Check(boundary, "warn", "; ".join(warnings), fix))
        else:
            checks.append(Check(boundary, "ok", f"train and score place on {', '.join(names)}"))
    return checks
