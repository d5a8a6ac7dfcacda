"""``mlbatch ecs task-definitions MODEL``: the train and score ECS task definitions of a model.

The launcher (:mod:`mlbatch.launchers.ecs`) runs every job with RunTask on one of two task
definitions, ``MLBATCH_ECS_TRAIN_TASK_DEFINITION`` and ``MLBATCH_ECS_SCORE_TASK_DEFINITION``,
overriding the command, size and GPU per job. This command renders those two definitions, sized
from the spec's ``train.resources`` and ``score.resources`` (the defaults a job gets when
no override applies), as JSON for ``aws ecs register-task-definition --cli-input-json`` or
Terraform's ``aws_ecs_task_definition`` (``container_definitions = jsonencode(...)``).

What each definition carries and why:

* the image's ``ENTRYPOINT ["python3", "-m"]`` is kept: RunTask's command override is
  ``[module, args...]``;
* ``initProcessEnabled``: an init process as PID 1 forwards StopTask's SIGTERM to the job, so a
  stopped Airflow task stops its job cleanly (``stopTimeout`` seconds before SIGKILL);
* GPU ``resourceRequirements`` when the job asks for GPUs (those jobs need EC2 capacity with GPU
  instances: ``requiresCompatibilities: [EC2]``); CPU-only jobs may also run on Fargate when their
  size is a Fargate size;
* the ``awslogs`` driver with the group and stream prefix the launcher tails
  (``<prefix>/<container>/<task id>``);
* the task role (what the job itself may do: S3) and the execution role (pull from ECR, write
  logs). No secrets: jobs take credentials from the task role.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mlbatch.cli import EXIT_USAGE, err, load_spec_or_exit
from mlbatch.env import Environment
from mlbatch.spec import ModelSpec, Resources

ecs_app = typer.Typer(help="ECS set-up: task definitions for the train and score jobs.", no_args_is_help=True)

DEFAULT_FAMILIES = {"train": "mlbatch-train", "score": "mlbatch-score"}
DEFAULT_IMAGES = {"train": "mlbatch/train:latest", "score": "mlbatch/score:latest"}
DEFAULT_LOG_GROUP = "/mlbatch/jobs"
DEFAULT_LOG_PREFIX = "mlbatch"
STOP_TIMEOUT_S = 120  # ECS's maximum: time for a job to flush after SIGTERM
# Fargate's (vCPU: memory GiB range, step) sizes; other sizes run on EC2 only.
_FARGATE = {
    0.25: (0.5, 2, 0.5),
    0.5: (1, 4, 1),
    1: (2, 8, 1),
    2: (4, 16, 1),
    4: (8, 30, 1),
    8: (16, 60, 4),
    16: (32, 120, 8),
}
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
                "train": family_name(
                    pick("train_family", "MLBATCH_ECS_TRAIN_TASK_DEFINITION", DEFAULT_FAMILIES["train"])
                ),
                "score": family_name(
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


def family_name(task_definition: str) -> str:
    """The family of ``family``, ``family:revision`` or a task definition ARN (what the launcher is given)."""
    name = task_definition.rsplit("/", 1)[-1] if task_definition.startswith("arn:") else task_definition
    return name.split(":", 1)[0]


def fargate_size(res: Resources) -> bool:
    bounds = _FARGATE.get(res.vcpu)
    if bounds is None or res.gpu:
        return False
    low, high, step = bounds
    return low <= res.memory_gib <= high and ((res.memory_gib - low) / step).is_integer()


def task_definition(spec: ModelSpec, kind: Kind, settings: TaskDefinitionSettings) -> dict[str, Any]:
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
                "awslogs-create-group": "true",
            },
        },
    }
    if res.gpu > 0:
        container["resourceRequirements"] = [{"type": "GPU", "value": str(res.gpu)}]
    compat = ["EC2", "FARGATE"] if settings.network_mode == "awsvpc" and fargate_size(res) else ["EC2"]
    return {
        "family": settings.families[kind],
        "taskRoleArn": settings.task_role_arn,
        "executionRoleArn": settings.execution_role_arn,
        "networkMode": settings.network_mode,
        "requiresCompatibilities": compat,
        "cpu": str(cpu),
        "memory": str(memory),
        "containerDefinitions": [container],
        "tags": [
            {"key": "mlbatch:job", "value": kind},
            {"key": "mlbatch:sized-for", "value": spec.name},
        ],
    }


def task_definitions(spec: ModelSpec, settings: TaskDefinitionSettings) -> dict[str, dict[str, Any]]:
    return {kind: task_definition(spec, kind, settings) for kind in ("train", "score")}


def register(app: typer.Typer) -> None:
    app.add_typer(ecs_app, name="ecs")


@ecs_app.command("task-definitions")
def task_definitions_command(
    model: Annotated[str, typer.Argument(help="Spec file or model name (sizes from its resources).")],
    kind: Annotated[
        str | None, typer.Option(help="Print only 'train' or 'score' (ready for --cli-input-json).")
    ] = None,
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
    """Render the model's train and score task definitions as JSON (nothing is registered)."""
    env = Environment.from_env()
    spec = load_spec_or_exit(model, env)
    if kind not in (None, "train", "score"):
        err.print(f"error: --kind {kind!r}: choose train or score")
        raise typer.Exit(EXIT_USAGE)
    try:
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
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    rendered = task_definitions(spec, settings)
    chosen = {kind: rendered[kind]} if kind else rendered
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for definition in chosen.values():
            path = out_dir / f"{definition['family']}.json"
            path.write_text(json.dumps(definition, indent=2) + "\n")
            err.print(f"wrote {path}", highlight=False)
        return
    print(json.dumps(chosen[kind] if kind else chosen, indent=2))
