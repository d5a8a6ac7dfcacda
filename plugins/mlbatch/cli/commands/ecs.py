"""``mlbatch ecs task-definitions MODEL...``: the ECS task definitions of each model's train and score jobs.

The launcher (:mod:`mlbatch.backends.launchers.ecs`) runs every job with RunTask, overriding the command,
size and GPU per job. A family's latest ACTIVE revision is what runs, so each model has its own
families, one per compatibility (:func:`mlbatch.backends.deploy_checks.task_definition_family`):
``<base>-<model>-ec2`` always, and ``<base>-<model>-fargate`` when the job's size is a Fargate size
and asks no GPU, where ``<base>`` is MLBATCH_ECS_TRAIN_TASK_DEFINITION or
MLBATCH_ECS_SCORE_TASK_DEFINITION (default ``mlbatch-train``, ``mlbatch-score``). A shared family
would run whichever model registered last, with its ``requiresCompatibilities``.

Each definition is sized from the spec's ``train.resources`` or ``score.resources`` and printed as
JSON for ``aws ecs register-task-definition --cli-input-json`` or Terraform's
``aws_ecs_task_definition`` (``container_definitions = jsonencode(...)``). What each carries and why:

* the image's ``ENTRYPOINT ["python3", "-m"]`` is kept: RunTask's command override is
  ``[module, args...]``;
* ``initProcessEnabled``: an init process as PID 1 forwards StopTask's SIGTERM to the job, so a
  stopped Airflow task stops its job cleanly (``stopTimeout`` seconds before SIGKILL);
* GPU ``resourceRequirements`` when the job asks for GPUs (EC2 only: Fargate has no GPUs);
* the ``awslogs`` driver with the group and stream prefix the launcher tails
  (``<prefix>/<container>/<task id>``); deploy/logs/log-group.json makes the group with a retention;
* the task role (what the job itself may do: S3) and the execution role (pull from ECR, write
  logs). No secrets: jobs take credentials from the task role.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer

from mlbatch.backends.deploy_checks import COMPATIBILITIES, family_base, fargate_size, task_definition_family
from mlbatch.backends.env import Environment
from mlbatch.cli.common import err, load_spec_or_exit, usage_errors
from mlbatch.errors import UsageError
from mlbatch.spec import ModelSpec

ecs_app = typer.Typer(help="ECS set-up: task definitions for the train and score jobs.", no_args_is_help=True)

DEFAULT_FAMILIES = {"train": "mlbatch-train", "score": "mlbatch-score"}
DEFAULT_IMAGES = {"train": "mlbatch/train:latest", "score": "mlbatch/score:latest"}
DEFAULT_LOG_GROUP = "/mlbatch/jobs"
DEFAULT_LOG_PREFIX = "mlbatch"
STOP_TIMEOUT_S = 120  # ECS's maximum: time for a job to flush after SIGTERM
_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")

Kind = Literal["train", "score"]


@dataclass(frozen=True)
class TaskDefinitionSettings:
    """Everything of a task definition that is not in the spec: from options, else the environment."""

    families: dict[str, str]
    images: dict[str, str]
    task_role_arn: str
    execution_role_arn: str
    region: str
    container: str = "job"
    log_group: str = DEFAULT_LOG_GROUP
    log_stream_prefix: str = DEFAULT_LOG_PREFIX
    network_mode: str = "awsvpc"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **options: str | None) -> TaskDefinitionSettings:
        """Options win over the environment; a missing role or region raises ValueError naming both."""
        e = os.environ if environ is None else environ

        def pick(option: str, variable: str, default: str | None = None) -> str:
            value = options.get(option) or e.get(variable) or default
            if not value:
                flag = "--" + option.replace("_", "-")
                raise ValueError(f"{flag} (or {variable}) is required")
            return value

        settings = cls(
            families={
                "train": family_base(
                    pick("train_family", "MLBATCH_ECS_TRAIN_TASK_DEFINITION", DEFAULT_FAMILIES["train"])
                ),
                "score": family_base(
                    pick("score_family", "MLBATCH_ECS_SCORE_TASK_DEFINITION", DEFAULT_FAMILIES["score"])
                ),
            },
            images={
                "train": pick("train_image", "MLBATCH_TRAIN_IMAGE", DEFAULT_IMAGES["train"]),
                "score": pick("score_image", "MLBATCH_SCORE_IMAGE", DEFAULT_IMAGES["score"]),
            },
            task_role_arn=pick("task_role_arn", "MLBATCH_ECS_TASK_ROLE_ARN"),
            execution_role_arn=pick("execution_role_arn", "MLBATCH_ECS_EXECUTION_ROLE_ARN"),
            region=pick("region", "MLBATCH_AWS_REGION", e.get("AWS_DEFAULT_REGION")),
            container=e.get("MLBATCH_ECS_CONTAINER") or "job",
            log_group=pick("log_group", "MLBATCH_ECS_LOG_GROUP", DEFAULT_LOG_GROUP),
            log_stream_prefix=e.get("MLBATCH_ECS_LOG_STREAM_PREFIX") or DEFAULT_LOG_PREFIX,
        )
        for name, arn in (("task role", settings.task_role_arn), ("execution role", settings.execution_role_arn)):
            if not _ARN.match(arn):
                raise ValueError(f"{name} {arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        return settings


family_name = family_base  # the name this module exported before families were per model


def task_definition(
    spec: ModelSpec, kind: Kind, settings: TaskDefinitionSettings, compatibility: str = "ec2"
) -> dict[str, Any]:
    """One RegisterTaskDefinition request (botocore's input shape) for the model's train or score job."""
    res = spec.train.resources if kind == "train" else spec.score.resources
    cpu, memory = int(res.vcpu * 1024), int(res.memory_gib * 1024)
    container: dict[str, Any] = {
        "name": settings.container,
        "image": settings.images[kind],
        "essential": True,
        "command": [f"jobs.{kind}", "--help"],  # replaced by every RunTask's override
        "linuxParameters": {"initProcessEnabled": True},
        "stopTimeout": STOP_TIMEOUT_S,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": settings.log_group,
                "awslogs-region": settings.region,
                "awslogs-stream-prefix": settings.log_stream_prefix,
                # Harmless where deploy/logs made the group (with its retention); needed where not.
                "awslogs-create-group": "true",
            },
        },
    }
    if res.gpu > 0:
        container["resourceRequirements"] = [{"type": "GPU", "value": str(res.gpu)}]
    if compatibility == "fargate" and not (settings.network_mode == "awsvpc" and fargate_size(res)):
        raise ValueError(f"{spec.name} {kind}: {res.vcpu:g} vCPU / {res.memory_gib:g} GiB is no Fargate size")
    return {
        "family": task_definition_family(settings.families[kind], spec.name, compatibility),
        "taskRoleArn": settings.task_role_arn,
        "executionRoleArn": settings.execution_role_arn,
        "networkMode": settings.network_mode,
        "requiresCompatibilities": [compatibility.upper()],
        "cpu": str(cpu),
        "memory": str(memory),
        "containerDefinitions": [container],
        "tags": [
            {"key": "mlbatch:job", "value": kind},
            {"key": "mlbatch:model", "value": spec.name},
        ],
    }


def compatibilities(spec: ModelSpec, kind: Kind, settings: TaskDefinitionSettings) -> list[str]:
    """``ec2`` always; ``fargate`` too when the job's size is a Fargate size (awsvpc, no GPU)."""
    res = spec.train.resources if kind == "train" else spec.score.resources
    return ["ec2", "fargate"] if settings.network_mode == "awsvpc" and fargate_size(res) else ["ec2"]


def task_definitions(spec: ModelSpec, settings: TaskDefinitionSettings) -> dict[str, dict[str, Any]]:
    """Every definition of the model, by family (distinct per model, kind and compatibility)."""
    rendered = {}
    for kind in ("train", "score"):
        for compatibility in compatibilities(spec, kind, settings):
            definition = task_definition(spec, kind, settings, compatibility)
            rendered[definition["family"]] = definition
    return rendered


def register(app: typer.Typer) -> None:
    app.add_typer(ecs_app, name="ecs")


@ecs_app.command("task-definitions")
def task_definitions_command(
    models: Annotated[list[str], typer.Argument(help="Spec files or model names (sizes from their resources).")],
    kind: Annotated[
        str | None, typer.Option(help="Print only 'train' or 'score' (one model: ready for --cli-input-json).")
    ] = None,
    compat: Annotated[str, typer.Option(help="With --kind: 'ec2' (default) or 'fargate'.")] = "ec2",
    out_dir: Annotated[
        Path | None, typer.Option(help="Write <family>.json per definition here instead of printing.")
    ] = None,
    train_family: Annotated[str | None, typer.Option(help="Env: MLBATCH_ECS_TRAIN_TASK_DEFINITION.")] = None,
    score_family: Annotated[str | None, typer.Option(help="Env: MLBATCH_ECS_SCORE_TASK_DEFINITION.")] = None,
    train_image: Annotated[str | None, typer.Option(help="Env: MLBATCH_TRAIN_IMAGE (an ECR URI).")] = None,
    score_image: Annotated[str | None, typer.Option(help="Env: MLBATCH_SCORE_IMAGE (an ECR URI).")] = None,
    task_role_arn: Annotated[str | None, typer.Option(help="Env: MLBATCH_ECS_TASK_ROLE_ARN.")] = None,
    execution_role_arn: Annotated[str | None, typer.Option(help="Env: MLBATCH_ECS_EXECUTION_ROLE_ARN.")] = None,
    region: Annotated[str | None, typer.Option(help="awslogs region. Env: MLBATCH_AWS_REGION.")] = None,
    log_group: Annotated[str | None, typer.Option(help="Env: MLBATCH_ECS_LOG_GROUP.")] = None,
) -> None:
    """Render each model's task definitions as JSON, one family per model, kind and compatibility (nothing
    is registered)."""
    env = Environment.from_env()
    specs = [load_spec_or_exit(model, env) for model in models]
    if kind not in (None, "train", "score") or compat not in COMPATIBILITIES:
        raise UsageError(f"--kind {kind!r} --compat {compat!r}: choose train or score, and ec2 or fargate")
    # A missing role or region, a bad ARN or family name, a size Fargate has not: all the options' fault.
    with usage_errors(ValueError):
        settings = TaskDefinitionSettings.from_env(
            train_family=train_family,
            score_family=score_family,
            train_image=train_image,
            score_image=score_image,
            task_role_arn=task_role_arn,
            execution_role_arn=execution_role_arn,
            region=region,
            log_group=log_group,
        )
        if kind:
            chosen_kind = cast(Kind, kind)  # checked above: train or score
            chosen = {d["family"]: d for d in (task_definition(s, chosen_kind, settings, compat) for s in specs)}
        else:
            chosen = {family: d for s in specs for family, d in task_definitions(s, settings).items()}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for family, definition in chosen.items():
            path = out_dir / f"{family}.json"
            path.write_text(json.dumps(definition, indent=2) + "\n")
            err.print(f"wrote {path}", highlight=False)
        return
    only = next(iter(chosen.values())) if kind and len(chosen) == 1 else chosen
    print(json.dumps(only, indent=2))
