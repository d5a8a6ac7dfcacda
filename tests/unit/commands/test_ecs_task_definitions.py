"""`mlbatch ecs task-definitions`: valid RegisterTaskDefinition requests the launcher's RunTask matches."""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.validate import ParamValidator
from mlbatch.backends.launchers import JobId, JobRequest
from mlbatch.backends.launchers.ecs import EcsConfig, EcsLauncher
from mlbatch.backends.store import ObjectStore
from mlbatch.cli.app import app
from mlbatch.cli.commands.ecs import TaskDefinitionSettings, task_definitions
from mlbatch.spec import load_spec
from typer.testing import CliRunner

from tests.support.paths import REPO

ACCOUNT = "123456789012"
ENV = {
    "MLBATCH_ECS_CLUSTER": "ml-batch",
    "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "mlbatch-train:7",
    "MLBATCH_ECS_SCORE_TASK_DEFINITION": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/mlbatch-score:3",
    "MLBATCH_TRAIN_IMAGE": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/mlbatch-train:3f9a1c2b",
    "MLBATCH_SCORE_IMAGE": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/mlbatch-score:3f9a1c2b",
    "MLBATCH_ECS_TASK_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/mlbatch-job",
    "MLBATCH_ECS_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/mlbatch-ecs-execution",
    "MLBATCH_AWS_REGION": "eu-west-1",
}
SHAPE = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape


def assert_valid(request: dict) -> None:
    report = ParamValidator().validate(request, SHAPE)
    assert not report.has_errors(), report.generate_report()


def test_definitions_are_valid_register_requests_sized_from_the_spec():
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    defs = task_definitions(spec, TaskDefinitionSettings.from_env(ENV))
    assert sorted(defs) == [
        "mlbatch-score-device_gender-ec2",
        "mlbatch-score-device_gender-fargate",
        "mlbatch-train-device_gender-ec2",
    ]
    for family, td in defs.items():
        kind = family.split("-")[1]
        assert_valid(td)
        (container,) = td["containerDefinitions"]
        assert container["linuxParameters"] == {"initProcessEnabled": True}, kind
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        assert container["logConfiguration"]["options"]["awslogs-region"] == "eu-west-1"
        assert container["image"] == ENV[f"MLBATCH_{kind.upper()}_IMAGE"]
        assert td["taskRoleArn"].endswith("role/mlbatch-job")
        assert td["executionRoleArn"].endswith("role/mlbatch-ecs-execution")
    train = defs["mlbatch-train-device_gender-ec2"]
    score, fargate = defs["mlbatch-score-device_gender-ec2"], defs["mlbatch-score-device_gender-fargate"]
    # train: 1 GPU, 4 vCPU, 16 GiB (the spec); score: CPU defaults 4 vCPU, 8 GiB (a Fargate size too).
    assert (train["cpu"], train["memory"], train["requiresCompatibilities"]) == ("4096", "16384", ["EC2"])
    assert train["containerDefinitions"][0]["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert (score["cpu"], score["memory"], score["requiresCompatibilities"]) == ("4096", "8192", ["EC2"])
    assert fargate["requiresCompatibilities"] == ["FARGATE"]
    assert "resourceRequirements" not in score["containerDefinitions"][0]


def test_launcher_runs_tasks_of_the_same_family_bases_and_container(tmp_path):
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    defs = task_definitions(spec, TaskDefinitionSettings.from_env(ENV))
    launcher = EcsLauncher(ObjectStore(tmp_path.as_uri()), EcsConfig.from_env(ENV), ecs_client=object())
    for family, td in defs.items():
        kind = family.split("-")[1]
        request = JobRequest(
            JobId("device_gender__" + kind, kind, "manual__1", -1), f"jobs.{kind}", [], "file:///x", model=spec.name
        )
        run = launcher.run_task_kwargs(request)
        # RunTask names exactly a family `mlbatch ecs task-definitions` registered for this model.
        assert run["taskDefinition"] in defs, (run["taskDefinition"], sorted(defs))
        assert run["overrides"]["containerOverrides"][0]["name"] == td["containerDefinitions"][0]["name"]


def test_cli_prints_one_definition_ready_for_cli_input_json(monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["ecs", "task-definitions", "device_gender", "--kind", "score"])
    assert result.exit_code == 0, result.output
    td = json.loads(result.stdout)
    assert_valid(td)
    assert td["family"] == "mlbatch-score-device_gender-ec2"
    result = CliRunner().invoke(app, ["ecs", "task-definitions", "device_gender", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mlbatch-score-device_gender-ec2.json",
        "mlbatch-score-device_gender-fargate.json",
        "mlbatch-train-device_gender-ec2.json",
    ]


@pytest.mark.parametrize(
    ("drop", "words"),
    [
        ("MLBATCH_ECS_TASK_ROLE_ARN", "--task-role-arn (or MLBATCH_ECS_TASK_ROLE_ARN) is required"),
        ("MLBATCH_AWS_REGION", "--region (or MLBATCH_AWS_REGION) is required"),
    ],
)
def test_cli_names_the_missing_setting(monkeypatch, drop, words):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(drop)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    result = CliRunner().invoke(app, ["ecs", "task-definitions", "device_gender"])
    assert result.exit_code == 2 and words in result.output


def test_a_bad_role_arn_is_refused():
    with pytest.raises(ValueError, match="is not an IAM role ARN"):
        TaskDefinitionSettings.from_env({**ENV, "MLBATCH_ECS_TASK_ROLE_ARN": "mlbatch-job"})
