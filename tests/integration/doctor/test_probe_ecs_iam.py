"""The IAM probes (ECS here) against IAM's policy simulator (the IAM double over moto's IAM, the
real boto3 clients on the wire): the worker's policy as docs/deploy.md gives it passes; without
PassRole, or with a Deny, the probe FAILs naming the action, the resource and the principal.
RunTask is simulated on each model's own families (``<base>-<model>-<ec2|fargate>``), the ones
the launcher runs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from mlbatch.backends.env import Environment
from mlbatch.cli.doctor.ecs import check_ecs
from mlbatch.cli.doctor.iam import PRINCIPAL_ENV, check_iam
from mlbatch.spec import ModelSpec, load_spec

from devtools.devservers.aws_wire import AwsEndpoint
from devtools.devservers.iam_double import iam_query_handlers
from tests.integration.doctor.deploy_docs import worker_policy
from tests.support.paths import REPO

ACCOUNT, REGION, CLUSTER = "123456789012", "us-east-1", "ml-batch"
# device_gender trains on a GPU (the EC2 capacity provider) and scores on CPU (here: Fargate).
FAMILIES = {
    "mlbatch-train-device_gender-ec2": "EC2",
    "mlbatch-score-device_gender-fargate": "FARGATE",
    "mlbatch-train-unregistered_model-ec2": None,  # a model nobody ran `mlbatch ecs task-definitions` for
}
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlbatch-job"
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlbatch-ecs-execution"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": []})
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto accepts any


@pytest.fixture(scope="module")
def endpoint() -> Iterator[AwsEndpoint]:
    with AwsEndpoint([], query_handlers=iam_query_handlers()) as ep:
        iam = boto3.client("iam", endpoint_url=ep.endpoint, region_name=REGION, **KEYS)
        for name in ("mlbatch-job", "mlbatch-ecs-execution"):
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
        ecs = boto3.client("ecs", endpoint_url=ep.endpoint, region_name=REGION, **KEYS)
        ecs.create_cluster(clusterName=CLUSTER)
        for family, compat in FAMILIES.items():
            if compat is None:
                continue
            ecs.register_task_definition(
                family=family,
                requiresCompatibilities=[compat],
                networkMode="awsvpc",
                cpu="1024",
                memory="2048",
                taskRoleArn=TASK_ROLE,
                executionRoleArn=EXECUTION_ROLE,
                containerDefinitions=[
                    {
                        "name": "job",
                        "image": f"mlbatch/{family}",
                        "memory": 512,
                        "logConfiguration": {
                            "logDriver": "awslogs",
                            "options": {"awslogs-group": "/mlbatch/jobs", "awslogs-region": REGION},
                        },
                    }
                ],
            )
        yield ep


def worker(endpoint: AwsEndpoint, name: str, policy: dict) -> dict[str, object]:
    """A worker role (with a path) holding ``policy``; clients signed with its assumed credentials."""
    iam = boto3.client("iam", endpoint_url=endpoint.endpoint, region_name=REGION, **KEYS)
    arn = iam.create_role(RoleName=name, Path="/airflow/", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="mlbatch-worker", PolicyDocument=json.dumps(policy))
    sts = boto3.client("sts", endpoint_url=endpoint.endpoint, region_name=REGION, **KEYS)
    creds = sts.assume_role(RoleArn=arn, RoleSessionName="airflow-worker")["Credentials"]
    session = boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    return {kind: session.client(kind, endpoint_url=endpoint.endpoint) for kind in ("ecs", "iam", "sts")}


@pytest.fixture(scope="module")
def specs() -> list[ModelSpec]:
    return [load_spec(REPO / "dags" / "specs" / "device_gender.yaml")]


@pytest.fixture
def ecs_env(monkeypatch) -> Environment:
    monkeypatch.delenv(PRINCIPAL_ENV, raising=False)
    for name, value in {
        "MLBATCH_LAUNCHER": "ecs",
        "MLBATCH_ECS_CLUSTER": CLUSTER,
        "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "mlbatch-train",
        "MLBATCH_ECS_SCORE_TASK_DEFINITION": "mlbatch-score",
        "MLBATCH_ECS_GPU_CAPACITY_PROVIDER": "gpu-asg",
        "MLBATCH_ECS_CPU_CAPACITY_PROVIDER": "FARGATE",
    }.items():
        monkeypatch.setenv(name, value)
    return Environment.from_env()


def documented_policy() -> dict:
    return worker_policy(
        account=ACCOUNT, region=REGION, cluster=CLUSTER, bucket="mlbatch-bucket", root="prod", worker_role="airflow/*"
    )


def test_the_documented_worker_policy_passes(endpoint, specs, ecs_env):
    checks = check_iam(ecs_env, worker(endpoint, "worker-ok", documented_policy()), specs)
    assert {c.boundary: c.status for c in checks} == {
        "ECS RunTask": "ok",
        "ECS PassRole": "ok",
        "ECS tasks": "ok",
        "ECS logs": "ok",
    }, checks
    assert f"arn:aws:iam::{ACCOUNT}:role/airflow/worker-ok may ecs:RunTask" in checks[0].detail  # path kept


def test_missing_pass_role_fails_naming_both_roles(endpoint, specs, ecs_env):
    policy = documented_policy()
    policy["Statement"] = [s for s in policy["Statement"] if "iam:PassRole" not in json.dumps(s)]
    checks = {c.boundary: c for c in check_iam(ecs_env, worker(endpoint, "worker-nopass", policy), specs)}
    assert {n for n, c in checks.items() if c.status == "FAIL"} == {"ECS PassRole"}
    fix = checks["ECS PassRole"].fix
    assert fix.startswith(f"allow iam:PassRole on {EXECUTION_ROLE}, {TASK_ROLE} with iam:PassedToService"), fix
    assert "role/airflow/worker-nopass" in fix


def test_an_explicit_deny_on_stop_task_fails(endpoint, specs, ecs_env):
    policy = documented_policy()
    policy["Statement"].append({"Effect": "Deny", "Action": "ecs:StopTask", "Resource": "*"})
    checks = {c.boundary: c for c in check_iam(ecs_env, worker(endpoint, "worker-deny", policy), specs)}
    assert checks["ECS tasks"].status == "FAIL" and "ecs:StopTask" in checks["ECS tasks"].detail
    assert "explicitDeny" in checks["ECS tasks"].detail and "remove the explicit Deny" in checks["ECS tasks"].fix


def test_run_task_on_another_family_only_fails(endpoint, specs, ecs_env):
    policy = documented_policy()
    for st in policy["Statement"]:
        if st["Action"] == "ecs:RunTask" or st["Action"] == ["ecs:RunTask"]:
            st["Resource"] = [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/mlbatch-train-*:*"]
    checks = {c.boundary: c for c in check_iam(ecs_env, worker(endpoint, "worker-train-only", policy), specs)}
    run_task = checks["ECS RunTask"]
    assert run_task.status == "FAIL" and "task-definition/mlbatch-score-device_gender-fargate:1" in run_task.detail
    assert "mlbatch-train-device_gender-ec2" not in run_task.detail  # allowed: only the denied one is named


def test_the_shared_family_of_old_is_not_what_runs(endpoint, specs, ecs_env):
    """A policy naming only the pre-model families (mlbatch-train:*) no longer lets RunTask run a job."""
    policy = documented_policy()
    for st in policy["Statement"]:
        if st.get("Sid") == "RunJobs":
            st["Resource"] = [r.replace("-*:*", ":*") for r in st["Resource"]]
    checks = {c.boundary: c for c in check_iam(ecs_env, worker(endpoint, "worker-old-families", policy), specs)}
    assert checks["ECS RunTask"].status == "FAIL"
    assert "task-definition/mlbatch-train-device_gender-ec2:1" in checks["ECS RunTask"].detail


def test_an_unregistered_model_fails_its_ecs_line_and_is_left_out_of_the_simulation(endpoint, specs, ecs_env):
    unregistered = specs[0].model_copy(update={"name": "unregistered_model"})
    clients = worker(endpoint, "worker-two-models", documented_policy())
    iam_checks = {c.boundary: c for c in check_iam(ecs_env, clients, [*specs, unregistered])}
    assert iam_checks["ECS RunTask"].status == "ok", iam_checks["ECS RunTask"]
    ecs_checks = {c.boundary: c for c in check_ecs(ecs_env, clients["ecs"], [*specs, unregistered])}
    assert ecs_checks["ECS train device_gender"].status == "ok", ecs_checks
    assert ecs_checks["ECS score device_gender"].status == "ok", ecs_checks
    missing = ecs_checks["ECS train unregistered_model"]
    assert missing.status == "FAIL" and "mlbatch-train-unregistered_model-ec2 is not registered" in missing.detail
    assert "mlbatch ecs task-definitions unregistered_model --kind train" in missing.fix


def test_an_explicit_principal_is_simulated_instead(endpoint, specs, ecs_env, monkeypatch):
    unrelated = {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}
    clients = worker(endpoint, "worker-admin-run", {"Version": "2012-10-17", "Statement": [unrelated]})
    worker(endpoint, "worker-real", documented_policy())
    monkeypatch.setenv(PRINCIPAL_ENV, f"arn:aws:iam::{ACCOUNT}:role/airflow/worker-real")
    assert {c.status for c in check_iam(ecs_env, clients, specs)} == {"ok"}


@pytest.fixture
def aws_env(ecs_env, monkeypatch) -> Environment:
    """ECS, plus S3 as the object store and Redshift as the warehouse."""
    redshift = {
        "conn_type": "aws",
        "extra": {"cluster_identifier": "analytics", "database": "dev", "iam_role": f"arn:aws:iam::{ACCOUNT}:role/rs"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_TEST", json.dumps(redshift))
    monkeypatch.setenv("MLBATCH_WAREHOUSE", "redshift://redshift_test")
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", "s3://mlbatch-bucket/prod")
    return Environment.from_env()


def test_s3_and_redshift_calls_the_doctor_does_not_make_are_simulated(endpoint, specs, aws_env):
    checks = {c.boundary: c for c in check_iam(aws_env, worker(endpoint, "worker-all", documented_policy()), specs)}
    assert checks["S3 IAM"].status == "ok" and "s3:AbortMultipartUpload" in checks["S3 IAM"].detail
    assert checks["Redshift IAM"].status == "ok" and "redshift-data:CancelStatement" in checks["Redshift IAM"].detail


def test_a_missing_cancel_statement_fails(endpoint, specs, aws_env):
    policy = documented_policy()
    for st in policy["Statement"]:
        if st.get("Sid") == "RedshiftData":
            st["Action"] = [a for a in st["Action"] if a != "redshift-data:CancelStatement"]
    checks = {c.boundary: c for c in check_iam(aws_env, worker(endpoint, "worker-nocancel", policy), specs)}
    assert {n for n, c in checks.items() if c.status == "FAIL"} == {"Redshift IAM"}
    assert checks["Redshift IAM"].fix.startswith("allow redshift-data:CancelStatement on *")
