"""Every AWS file under deploy/ is a valid request of the API call that applies it (botocore's
service models), IAM documents pass IAM's grammar and name real actions (cfn-lint), and the
bucket's lifecycle rules never expire what the pipeline keeps."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.unit.deploy.aws_models import iam_policy_errors, shape_errors

DEPLOY = REPO / "deploy"

# deploy/<file>: (service, operation) that applies it as --cli-input-json (docs/deploy.md says which).
REQUESTS = {
    "ecs/cluster.json": ("ecs", "CreateCluster"),
    "ecs/launch-template-gpu.json": ("ec2", "CreateLaunchTemplate"),
    "ecs/autoscaling-group-gpu.json": ("autoscaling", "CreateAutoScalingGroup"),
    "ecs/capacity-provider-gpu.json": ("ecs", "CreateCapacityProvider"),
    "ecs/cluster-capacity-providers.json": ("ecs", "PutClusterCapacityProviders"),
    "logs/log-group.json": ("logs", "CreateLogGroup"),
    "logs/retention.json": ("logs", "PutRetentionPolicy"),
    "s3/lifecycle.json": ("s3", "PutBucketLifecycleConfiguration"),
}
POLICIES = sorted(p.relative_to(DEPLOY).as_posix() for p in (DEPLOY / "iam").glob("*.json"))
TRUST = sorted(p.relative_to(DEPLOY).as_posix() for p in (DEPLOY / "iam" / "trust").glob("*.json"))


def load(rel: str) -> dict:
    return json.loads((DEPLOY / rel).read_text())


def test_every_json_file_under_deploy_is_checked_here_or_generated():
    checked = set(REQUESTS) | set(POLICIES) | set(TRUST)
    on_disk = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.json")}
    assert on_disk == checked


@pytest.mark.parametrize("rel", sorted(REQUESTS))
def test_request_is_valid_for_its_api_call(rel):
    service, operation = REQUESTS[rel]
    assert shape_errors(service, operation, load(rel)) == []


def test_retention_is_one_cloudwatch_accepts():
    """The model types it as an integer; the allowed periods are only in its documentation."""
    from tests.unit.deploy.aws_models import input_shape

    doc = input_shape("logs", "PutRetentionPolicy").members["retentionInDays"].documentation
    allowed = {int(n) for n in doc.split("Possible values are:")[1].split(".")[0].replace("and", "").split(",")}
    assert 3653 in allowed and load("logs/retention.json")["retentionInDays"] in allowed


def test_the_shape_check_catches_enum_and_pattern_mistakes():
    assert shape_errors("logs", "CreateLogGroup", {"logGroupName": "/mlbatch/jobs with spaces"})
    bad = {**load("ecs/capacity-provider-gpu.json")}
    bad["autoScalingGroupProvider"] = {**bad["autoScalingGroupProvider"], "managedTerminationProtection": "ON"}
    assert shape_errors("ecs", "CreateCapacityProvider", bad)


@pytest.mark.parametrize("rel", POLICIES)
def test_permission_policy_is_valid_iam(rel):
    document = load(rel)
    assert iam_policy_errors(document) == []
    assert (
        shape_errors("iam", "CreatePolicy", {"PolicyName": Path(rel).stem, "PolicyDocument": json.dumps(document)})
        == []
    )


@pytest.mark.parametrize("rel", TRUST)
def test_trust_policy_is_valid_iam(rel):
    document = load(rel)
    assert iam_policy_errors(document, trust=True) == []
    request = {"RoleName": Path(rel).stem, "AssumeRolePolicyDocument": json.dumps(document)}
    assert shape_errors("iam", "CreateRole", request) == []


def test_the_iam_check_catches_a_misspelt_action():
    document = load("iam/job-task-role.json")
    document["Statement"][0]["Action"] = ["s3:GetObjekt"]
    assert any("getobjekt" in e for e in iam_policy_errors(document))


def test_cluster_names_match_what_the_launcher_is_told():
    import yaml

    env = {e["name"]: e["value"] for e in yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())["env"]}
    providers = load("ecs/cluster-capacity-providers.json")
    assert load("ecs/cluster.json")["clusterName"] == providers["cluster"] == env["MLBATCH_ECS_CLUSTER"]
    assert env["MLBATCH_ECS_GPU_CAPACITY_PROVIDER"] == load("ecs/capacity-provider-gpu.json")["name"]
    # A Fargate capacity provider has AWS's name (FARGATE or FARGATE_SPOT); it cannot be named otherwise.
    assert env["MLBATCH_ECS_CPU_CAPACITY_PROVIDER"] in providers["capacityProviders"]
    assert set(providers["capacityProviders"]) - {"FARGATE", "FARGATE_SPOT"} == {"mlbatch-gpu"}
    group = load("ecs/autoscaling-group-gpu.json")
    assert group["LaunchTemplate"]["LaunchTemplateName"] == load("ecs/launch-template-gpu.json")["LaunchTemplateName"]
    # Managed termination protection needs instances protected from scale-in.
    assert group["NewInstancesProtectedFromScaleIn"] and group["MinSize"] == 0


def test_gpu_instances_run_the_ecs_gpu_ami_and_join_the_cluster():
    data = load("ecs/launch-template-gpu.json")["LaunchTemplateData"]
    assert data["ImageId"] == "resolve:ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    assert "ECS_CLUSTER=mlbatch" in base64.b64decode(data["UserData"]).decode()


def test_log_group_is_the_one_the_task_definitions_write():
    import mlbatch.cli.app  # noqa: F401  (registers the command modules first: commands.ecs imports the CLI)
    from mlbatch.cli.commands.ecs import DEFAULT_LOG_GROUP

    assert (
        load("logs/log-group.json")["logGroupName"] == load("logs/retention.json")["logGroupName"] == DEFAULT_LOG_GROUP
    )


def test_lifecycle_expires_scratch_only():
    """unload/ (the warehouse's extracts), publish/ (Aurora's staged TSVs) and the doctor's probes are
    scratch; models/, labels/ and runs/ are what the pipeline keeps and are never expired. The probes
    sit under every <prefix><model>/_mlbatch_doctor/, which no one lifecycle prefix covers: the rule
    matches the tag the doctor puts on each probe object instead."""
    from mlbatch import names

    rules = load("s3/lifecycle.json")["LifecycleConfiguration"]["Rules"]
    expired = {r["Filter"]["Prefix"] for r in rules if "Expiration" in r and "Prefix" in r["Filter"]}
    assert expired == {f"mlbatch/{names.UNLOAD_ROOT}", f"mlbatch/{names.PUBLISH_ROOT}"}
    assert all(r["Status"] == "Enabled" for r in rules)
    (abort,) = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    # A killed checkpoint or publish upload: its parts are billed until aborted.
    assert (
        abort["Filter"] == {"Prefix": "mlbatch/"}
        and abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    )


def test_lifecycle_expires_the_doctors_tagged_probes_after_a_day():
    from mlbatch.cli.doctor.s3 import PROBE_TAG

    rules = load("s3/lifecycle.json")["LifecycleConfiguration"]["Rules"]
    tagged = [r for r in rules if "Tags" in r["Filter"].get("And", {}) or "Tag" in r["Filter"]]
    (rule,) = tagged
    assert rule["Filter"] == {"And": {"Prefix": "mlbatch/", "Tags": [PROBE_TAG]}}  # only the probes: no other tag
    assert rule["Expiration"] == {"Days": 1}
    # S3 refuses AbortIncompleteMultipartUpload in a rule filtered by tags: it stays a rule of its own.
    assert "AbortIncompleteMultipartUpload" not in rule


# The Permissions section's placeholders, as deploy/ fills them in (the Helm values' names).
PLACEHOLDERS = {
    "<bucket>": "mlbatch-prod",
    "<root>": "mlbatch",
    "<region>": "eu-west-1",
    "<account>": "123456789012",
    "<cluster>": "mlbatch",
    "<worker-role>": "mlbatch-airflow",
}


def documented_workers_policy() -> dict:
    import re

    doc = (REPO / "docs" / "deploy.md").read_text()
    start = doc.index("<!-- doctor-tested: worker-policy -->")
    block = re.search(r"```json\n(.*?)```", doc[start:], re.S).group(1)
    for placeholder, value in PLACEHOLDERS.items():
        block = block.replace(placeholder, value)
    return json.loads(block)


def test_workers_policy_is_the_documented_one():
    """deploy/iam/airflow-workers.json is docs/deploy.md's workers' policy (the one the doctor's IAM
    simulation is tested against); RunTask covers every model's families: <base>-<model>-<compat>."""
    documented, shipped = documented_workers_policy(), load("iam/airflow-workers.json")
    assert shipped == documented
    (run_jobs,) = [s for s in shipped["Statement"] if s["Sid"] == "RunJobs"]
    from mlbatch.backends.deploy_checks import task_definition_family

    family = task_definition_family("mlbatch-train", "device_gender", "ec2")
    assert "arn:aws:ecs:eu-west-1:123456789012:task-definition/mlbatch-train-*:*" in run_jobs["Resource"]
    assert family.startswith("mlbatch-train-")
