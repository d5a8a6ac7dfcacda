"""The IAM probe's principal (an assumed role mapped back to its role ARN) and its reading of the
simulator's answer in both of IAM's shapes (per resource at the top, or ResourceSpecificResults)."""

from __future__ import annotations

from types import SimpleNamespace

from botocore.exceptions import ClientError
from mlbatch.cli.doctor import iam as iam_probe

ASSUMED = "arn:aws:sts::123456789012:assumed-role/mlbatch-worker/i-0abc"


def sts(arn: str) -> SimpleNamespace:
    return SimpleNamespace(get_caller_identity=lambda: {"Arn": arn})


def test_assumed_role_is_mapped_to_its_role_with_its_path(monkeypatch):
    monkeypatch.delenv(iam_probe.PRINCIPAL_ENV, raising=False)
    role = {"Role": {"Arn": "arn:aws:iam::123456789012:role/airflow/mlbatch-worker"}}
    client = SimpleNamespace(get_role=lambda RoleName: role)  # noqa: N803 - boto3's keyword
    assert iam_probe.worker_principal(sts(ASSUMED), client) == role["Role"]["Arn"]


def test_without_get_role_the_path_less_role_arn_is_used(monkeypatch):
    monkeypatch.delenv(iam_probe.PRINCIPAL_ENV, raising=False)

    def denied(RoleName):  # noqa: N803
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRole")

    principal = iam_probe.worker_principal(sts(ASSUMED), SimpleNamespace(get_role=denied))
    assert principal == "arn:aws:iam::123456789012:role/mlbatch-worker"


def test_an_iam_user_and_an_explicit_principal(monkeypatch):
    monkeypatch.delenv(iam_probe.PRINCIPAL_ENV, raising=False)
    user = "arn:aws:iam::123456789012:user/ci"
    assert iam_probe.worker_principal(sts(user), None) == user
    monkeypatch.setenv(iam_probe.PRINCIPAL_ENV, "arn:aws:iam::123456789012:role/w")
    assert iam_probe.worker_principal(None, None) == "arn:aws:iam::123456789012:role/w"


def test_both_answer_shapes_are_read():
    a, b = "arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b"
    specific = {
        "EvaluationResults": [
            {
                "EvalActionName": "iam:PassRole",
                "EvalResourceName": "*",
                "EvalDecision": "implicitDeny",
                "ResourceSpecificResults": [
                    {"EvalResourceName": a, "EvalResourceDecision": "allowed"},
                    {"EvalResourceName": b, "EvalResourceDecision": "implicitDeny"},
                ],
            }
        ]
    }
    client = SimpleNamespace(simulate_principal_policy=lambda **kw: specific)
    assert iam_probe._decisions(client, "p", "iam:PassRole", [a, b], {}) == {a: "allowed", b: "implicitDeny"}
    flat = {
        "EvaluationResults": [
            {"EvalActionName": "iam:PassRole", "EvalResourceName": r, "EvalDecision": d}
            for r, d in ((a, "explicitDeny"), (b, "allowed"))
        ]
    }
    client = SimpleNamespace(simulate_principal_policy=lambda **kw: flat)
    assert iam_probe._decisions(client, "p", "iam:PassRole", [a, b], {}) == {a: "explicitDeny", b: "allowed"}
