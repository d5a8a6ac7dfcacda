"""Pure checks of an ECS deployment: task-definition family names and whether a job's size places.

Standard library and :mod:`mlbatch.spec` only, so the launcher (which picks the family per job),
``mlbatch ecs task-definitions`` (which renders the families) and ``mlbatch doctor`` (which warns
when a spec cannot place) share one definition of each rule.

Families. One family per (job kind, model, compatibility): ``<base>-<model>-<ec2|fargate>``,
e.g. ``mlbatch-train-device_gender-ec2``. A family's latest ACTIVE revision is what RunTask runs,
so a family shared by every model would run whichever model registered last, with that model's
``requiresCompatibilities``: a Fargate-compatible score definition registered after a GPU one
turns the next GPU job's RunTask into an error. The compatibility follows the capacity provider
the job runs on (``FARGATE``/``FARGATE_SPOT`` or an Auto Scaling group provider).

Placement. ECS places a task only when an instance's *registered* resources (not its nominal
size) hold the whole task: memory is what the OS reports less the agent's reservation, about 6 %
below the instance's GiB, so a 16 GiB task never places on a 16 GiB instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mlbatch.spec import ModelSpec, Resources

COMPATIBILITIES = ("ec2", "fargate")
FARGATE_PROVIDERS = ("FARGATE", "FARGATE_SPOT")  # AWS's names: a Fargate provider cannot be named otherwise
_FAMILY = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # RegisterTaskDefinition's rule for `family`

# Fargate's (vCPU: memory GiB low, high, step) sizes; other sizes run on EC2 only.
FARGATE_SIZES = {
    0.25: (0.5, 2, 0.5),
    0.5: (1, 4, 1),
    1: (2, 8, 1),
    2: (4, 16, 1),
    4: (8, 30, 1),
    8: (16, 60, 4),
    16: (32, 120, 8),
}


def family_base(task_definition: str) -> str:
    """The family of ``family``, ``family:revision`` or a task definition ARN."""
    name = task_definition.rsplit("/", 1)[-1] if task_definition.startswith("arn:") else task_definition
    return name.split(":", 1)[0]


def compatibility_for(capacity_provider: str | None) -> str:
    """``fargate`` for AWS's Fargate providers, else ``ec2`` (an ASG provider, or the cluster default)."""
    return "fargate" if capacity_provider in FARGATE_PROVIDERS else "ec2"


def task_definition_family(base: str, model: str, compatibility: str) -> str:
    """``<base>-<model>-<compatibility>``: the family the launcher runs for ``model``'s jobs.

    ``base`` is MLBATCH_ECS_TRAIN_TASK_DEFINITION or MLBATCH_ECS_SCORE_TASK_DEFINITION (a revision
    or ARN is reduced to its family name).
    """
    if compatibility not in COMPATIBILITIES:
        raise ValueError(f"compatibility {compatibility!r} is not one of {COMPATIBILITIES}")
    family = f"{family_base(base)}-{model}-{compatibility}"
    if not _FAMILY.match(family):
        raise ValueError(f"task definition family {family!r} has characters other than letters, digits, - and _")
    return family


def job_task_definition_family(base: str, model: str, capacity_provider: str | None) -> str:
    """The family RunTask should name for a job of ``model`` on ``capacity_provider``: what the ECS
    launcher passes as ``taskDefinition`` (the family's latest ACTIVE revision runs)."""
    return task_definition_family(base, model, compatibility_for(capacity_provider))


def fargate_size(res: Resources) -> bool:
    """Whether ``res`` is one of Fargate's task sizes (and asks no GPU: Fargate has none)."""
    bounds = FARGATE_SIZES.get(res.vcpu)
    if bounds is None or res.gpu:
        return False
    low, high, step = bounds
    return low <= res.memory_gib <= high and ((res.memory_gib - low) / step).is_integer()


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpu: int
    memory_gib: int
    gpu: int = 0

    @property
    def registered_cpu(self) -> int:
        return self.vcpu * 1024  # the agent registers every vCPU (no CPU reservation by default)

    @property
    def registered_memory_mib(self) -> int:
        # MemTotal is below the nominal size (kernel, firmware) and the agent keeps some back: on
        # the ECS-optimized AMIs about 94 % is registered (a 16 GiB g5.xlarge registers ~15.2 GiB).
        return int(self.memory_gib * 1024 * 0.94)


# The instance types docs/deploy.md and deploy/ecs/ name (EC2's published sizes).
INSTANCE_TYPES = {
    t.name: t
    for t in (
        InstanceType("g5.xlarge", 4, 16, 1),
        InstanceType("g5.2xlarge", 8, 32, 1),
        InstanceType("g5.4xlarge", 16, 64, 1),
        InstanceType("g6.xlarge", 4, 16, 1),
        InstanceType("g6.2xlarge", 8, 32, 1),
        InstanceType("g6.4xlarge", 16, 64, 1),
        InstanceType("c7i.xlarge", 4, 8),
        InstanceType("c7i.2xlarge", 8, 16),
        InstanceType("m7i.xlarge", 4, 16),
        InstanceType("m7i.2xlarge", 8, 32),
    )
}


def places_on(res: Resources, instance: InstanceType) -> bool:
    return (
        res.gpu <= instance.gpu
        and int(res.vcpu * 1024) <= instance.registered_cpu
        and int(res.memory_gib * 1024) <= instance.registered_memory_mib
    )


def placement_warnings(spec: ModelSpec, instance_types: Iterable[str], *, fargate: bool = False) -> list[str]:
    """One line per job of ``spec`` that cannot place (empty: every job places).

    GPU jobs are checked against the GPU instance types among ``instance_types``. CPU jobs: with
    ``fargate`` (the CPU capacity provider is FARGATE or FARGATE_SPOT) their size must be a Fargate
    size; without, they are checked against every type. Unknown names raise ValueError: a warning
    about an instance type nobody checked would mislead.
    """
    names = list(instance_types)
    unknown = [n for n in names if n not in INSTANCE_TYPES]
    if unknown:
        raise ValueError(f"unknown instance type(s) {unknown}; known: {', '.join(INSTANCE_TYPES)}")
    instances = [INSTANCE_TYPES[n] for n in names]
    warnings = []
    for kind, res in (("train", spec.train.resources), ("score", spec.score.resources)):
        asks = f"{spec.name} {kind} asks {res.gpu} GPU / {res.vcpu:g} vCPU / {res.memory_gib:g} GiB"
        if fargate and not res.gpu:
            if not fargate_size(res):
                warnings.append(f"{asks}, which is no Fargate size (the CPU capacity provider is Fargate)")
            continue
        candidates = [i for i in instances if i.gpu] if res.gpu else instances
        if not any(places_on(res, i) for i in candidates):
            registered = ", ".join(
                f"{i.name} registers {i.vcpu} vCPU / {i.registered_memory_mib} MiB / {i.gpu} GPU" for i in candidates
            )
            mib = int(res.memory_gib * 1024)
            warnings.append(f"{asks} ({mib} MiB), which places on none of: {registered or 'no GPU instance type'}")
    return warnings
