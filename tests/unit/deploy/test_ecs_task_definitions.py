"""ECS that places: one task-definition family per model, kind and compatibility, every definition a
valid RegisterTaskDefinition request, and every shipped spec's jobs fit the instance type deploy/ecs
launches (registered resources, not nominal ones)."""

from __future__ import annotations

import json

import pytest
from mlbatch.backends.deploy_checks import (
    INSTANCE_TYPES,
    compatibility_for,
    job_task_definition_family,
    placement_warnings,
    task_definition_family,
)
from mlbatch.cli.app import app
from mlbatch.cli.commands.ecs import TaskDefinitionSettings, task_definitions
from mlbatch.spec import load_spec
from typer.testing import CliRunner

from tests.support.paths import REPO
from tests.unit.deploy.aws_models import shape_errors

ACCOUNT = "123456789012"
ENV = {
    "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "mlbatch-train",
    "MLBATCH_ECS_SCORE_TASK_DEFINITION": "mlbatch-score",
    "MLBATCH_TRAIN_IMAGE": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/mlbatch/train@sha256:{'a' * 64}",
    "MLBATCH_SCORE_IMAGE": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/mlbatch/score@sha256:{'b' * 64}",
    "MLBATCH_ECS_TASK_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/mlbatch-job",
    "MLBATCH_ECS_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/mlbatch-ecs-execution",
    "MLBATCH_AWS_REGION": "eu-west-1",
}
SPECS = sorted((REPO / "dags" / "specs").glob("*.yaml"))


def launch_template_instance_type() -> str:
    return json.loads((REPO / "deploy" / "ecs" / "launch-template-gpu.json").read_text())["LaunchTemplateData"][
        "InstanceType"
    ]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    settings = TaskDefinitionSettings.from_env(ENV)
    out: dict[str, dict] = {}
    for path in SPECS:
        for family, definition in task_definitions(load_spec(path), settings).items():
            assert family not in out, f"{family} rendered twice: families must differ per model"
            out[family] = definition
    return out


def test_every_definition_of_every_shipped_spec_is_a_valid_register_request(rendered):
    assert len(SPECS) >= 2
    for family, definition in rendered.items():
        assert shape_errors("ecs", "RegisterTaskDefinition", definition) == [], family


def test_families_are_distinct_per_model_kind_and_compatibility(rendered):
    for path in SPECS:
        model = load_spec(path).name
        ours = {f for f, d in rendered.items() if {"key": "mlbatch:model", "value": model} in d["tags"]}
        assert f"mlbatch-train-{model}-ec2" in ours and f"mlbatch-score-{model}-ec2" in ours
        assert all(f.removeprefix("mlbatch-train-").removeprefix("mlbatch-score-").startswith(model) for f in ours)
    for family, definition in rendered.items():
        # One compatibility per family: a re-registration can never flip requiresCompatibilities.
        assert definition["requiresCompatibilities"] == [family.rsplit("-", 1)[1].upper()]
        assert definition["family"] == family


def test_gpu_jobs_are_ec2_only_and_ask_for_the_gpu(rendered):
    for family, definition in rendered.items():
        (container,) = definition["containerDefinitions"]
        if "resourceRequirements" in container:
            assert family.endswith("-ec2") and container["resourceRequirements"][0]["type"] == "GPU"


def test_the_launcher_family_rule():
    assert compatibility_for("FARGATE") == compatibility_for("FARGATE_SPOT") == "fargate"
    assert compatibility_for("mlbatch-gpu") == compatibility_for(None) == "ec2"
    assert task_definition_family("mlbatch-train:7", "device_gender", "ec2") == "mlbatch-train-device_gender-ec2"
    arn = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/mlbatch-score:3"
    assert task_definition_family(arn, "m", "fargate") == "mlbatch-score-m-fargate"
    with pytest.raises(ValueError, match="compatibility"):
        task_definition_family("mlbatch-train", "m", "gpu")
    assert job_task_definition_family("mlbatch-score", "m", "FARGATE") == "mlbatch-score-m-fargate"
    assert job_task_definition_family("mlbatch-train", "m", "mlbatch-gpu") == "mlbatch-train-m-ec2"


def test_the_launcher_family_is_one_the_command_renders(rendered):
    """For each shipped spec, the family a job would run on each provider of deploy/ exists."""
    for path in SPECS:
        spec = load_spec(path)
        train = job_task_definition_family("mlbatch-train", spec.name, "mlbatch-gpu")
        score = job_task_definition_family("mlbatch-score", spec.name, "FARGATE")
        assert train in rendered and score in rendered, (train, score)


def test_every_shipped_spec_places_on_the_instance_type_deploy_launches():
    instance = launch_template_instance_type()
    assert instance in INSTANCE_TYPES
    for path in SPECS:
        assert placement_warnings(load_spec(path), [instance], fargate=True) == [], path.name


def test_a_16_gib_gpu_job_never_places_on_a_16_gib_instance():
    """The shipped specs' train size (1 GPU, 4 vCPU, 16 GiB) on g5.xlarge / g6.xlarge: ~15 GiB registered."""
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    assert (spec.train.resources.gpu, spec.train.resources.memory_gib) == (1, 16)
    (warning,) = placement_warnings(spec, ["g5.xlarge", "g6.xlarge"], fargate=True)
    assert "device_gender train" in warning and "g5.xlarge" in warning
    with pytest.raises(ValueError, match="unknown instance type"):
        placement_warnings(spec, ["p9.huge"])


def test_cpu_jobs_are_checked_against_ec2_types_when_there_is_no_fargate():
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    # score: 4 vCPU / 8 GiB; c7i.xlarge has 8 GiB nominal, less registered.
    assert any("score" in w for w in placement_warnings(spec, ["c7i.xlarge"], fargate=False))
    assert not any("score" in w for w in placement_warnings(spec, ["c7i.xlarge"], fargate=True))
    assert not any("score" in w for w in placement_warnings(spec, ["m7i.xlarge"], fargate=False))
    # On Fargate, a CPU job must have one of Fargate's sizes (4 vCPU takes 8 to 30 GiB).
    odd = spec.model_copy(
        update={"score": spec.score.model_copy(update={"resources": type(spec.score.resources)(vcpu=4, memory_gib=6)})}
    )
    (warning,) = placement_warnings(odd, ["g5.2xlarge"], fargate=True)
    assert "score" in warning and "no Fargate size" in warning


def test_cli_renders_every_models_families(monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    models = [load_spec(p).name for p in SPECS]
    result = CliRunner().invoke(app, ["ecs", "task-definitions", *models, "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.stem for p in tmp_path.iterdir()}
    assert {f"mlbatch-train-{m}-ec2" for m in models} <= written
    result = CliRunner().invoke(app, ["ecs", "task-definitions", models[0], "--kind", "train"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["family"] == f"mlbatch-train-{models[0]}-ec2"
    result = CliRunner().invoke(app, ["ecs", "task-definitions", models[0], "--kind", "train", "--compat", "fargate"])
    assert result.exit_code == 2 and "no Fargate size" in result.output
