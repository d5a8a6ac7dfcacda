"""The IAM policy simulator double: the real boto3 client against AwsEndpoint, policies in moto."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest

from devtools.devservers.aws_wire import AwsEndpoint, aws_environment
from devtools.devservers.iam_double import iam_query_handlers

ACCOUNT = "123456789012"
TD = f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/mlbatch-train:3"


@pytest.fixture(scope="module")
def iam() -> Iterator[object]:
    with AwsEndpoint([], query_handlers=iam_query_handlers()) as endpoint:
        env = aws_environment(endpoint.endpoint)
        yield boto3.client(
            "iam",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
        )


def role(iam, name: str, inline: dict | None = None, managed: dict | None = None) -> str:
    trust = {"Version": "2012-10-17", "Statement": []}
    arn = iam.create_role(RoleName=name, Path="/workers/", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if inline:
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=json.dumps(inline))
    if managed:
        policy = iam.create_policy(PolicyName=f"{name}-managed", PolicyDocument=json.dumps(managed))
        iam.attach_role_policy(RoleName=name, PolicyArn=policy["Policy"]["Arn"])
    return arn


def decisions(iam, arn: str, actions: list[str], resources: list[str], context=None) -> dict[tuple[str, str], str]:
    kwargs = {"ContextEntries": context} if context else {}
    answer = iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=actions, ResourceArns=resources, **kwargs)
    return {(r["EvalActionName"], r["EvalResourceName"]): r["EvalDecision"] for r in answer["EvaluationResults"]}


def statement(effect: str, action, resource, condition=None) -> dict:
    st = {"Effect": effect, "Action": action, "Resource": resource}
    if condition:
        st["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [st]}


def test_allow_wildcards_and_implicit_deny(iam):
    arn = role(
        iam, "w1", managed=statement("Allow", "ecs:Run*", f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/mlbatch-*")
    )
    got = decisions(iam, arn, ["ecs:RunTask", "ecs:StopTask"], [TD])
    assert got == {("ecs:RunTask", TD): "allowed", ("ecs:StopTask", TD): "implicitDeny"}


def test_explicit_deny_wins(iam):
    arn = role(
        iam,
        "w2",
        inline=statement("Deny", "ecs:RunTask", "*"),
        managed=statement("Allow", "ecs:*", "*"),
    )
    assert decisions(iam, arn, ["ecs:RunTask", "ecs:DescribeTasks"], [TD]) == {
        ("ecs:RunTask", TD): "explicitDeny",
        ("ecs:DescribeTasks", TD): "allowed",
    }


def test_conditions_read_the_context_entries(iam):
    passed = {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    target = f"arn:aws:iam::{ACCOUNT}:role/mlbatch-task"
    arn = role(iam, "w3", inline=statement("Allow", "iam:PassRole", target, passed))
    ecs = [
        {
            "ContextKeyName": "iam:PassedToService",
            "ContextKeyValues": ["ecs-tasks.amazonaws.com"],
            "ContextKeyType": "string",
        }
    ]
    assert decisions(iam, arn, ["iam:PassRole"], [target], ecs) == {("iam:PassRole", target): "allowed"}
    assert decisions(iam, arn, ["iam:PassRole"], [target]) == {("iam:PassRole", target): "implicitDeny"}


def test_unknown_principal_is_iam_s_error(iam):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        iam.simulate_principal_policy(
            PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:role/nobody", ActionNames=["s3:GetObject"]
        )
    assert err.value.response["Error"]["Code"] == "NoSuchEntity"


def test_other_iam_calls_still_reach_moto(iam):
    assert iam.get_role(RoleName="w1")["Role"]["Path"] == "/workers/"
