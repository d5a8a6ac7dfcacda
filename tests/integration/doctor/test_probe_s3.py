"""The object store probe writes, lists, reads and deletes under every prefix a run writes: a
prefix the workers' policy does not let them write FAILs with the action and resource to allow."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from mlbatch.backends import store as store_mod
from mlbatch.backends.env import Environment
from mlbatch.cli import doctor
from mlbatch.cli.doctor import s3 as doctor_s3

from tests.fakes.aws_gates import S3Gate

BUCKET = "mlbatch-probes"
KEY_ID = "AKIADOCTORPROBE"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Gate]:
    with S3Gate(static_keys={KEY_ID}) as gate:
        for name in list(os.environ):
            if name.startswith(("AWS_", "MLBATCH_")) or name == "AIRFLOW_CTX_DAG_ID":
                monkeypatch.delenv(name)
        env = {
            "AWS_ENDPOINT_URL_S3": gate.endpoint,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": "probe-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLBATCH_OBJECT_STORE": f"s3://{BUCKET}/root",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # boto3's default session keeps the credentials it first resolved: an earlier test's keys
        # would be sent to the gate. A fresh one reads this environment.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        boto3.client("s3", endpoint_url=gate.endpoint).create_bucket(Bucket=BUCKET)
        store_mod._S3_CACHE.clear()
        store_mod._BOTO_CACHE.clear()
        yield gate
        store_mod._S3_CACHE.clear()
        store_mod._BOTO_CACHE.clear()


def left_behind(gate: S3Gate) -> list[str]:
    listing = boto3.client("s3", endpoint_url=gate.endpoint).list_objects_v2(Bucket=BUCKET)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_every_prefix_is_probed_and_nothing_is_left(gate):
    checks = doctor.check_object_store(Environment.from_env(), [])
    assert {c.boundary: c.status for c in checks} == {"object store": "ok"} | {
        f"S3 {p}": "ok" for p in ("labels/", "unload/", "models/", "predictions/", "runs/", "export/", "costs/")
    }
    assert left_behind(gate) == []


def test_publish_prefix_is_probed_when_aurora_loads_from_s3(gate, monkeypatch):
    monkeypatch.setenv("MLBATCH_AURORA_LOAD_FROM_S3", "1")
    checks = doctor.check_object_store(Environment.from_env(), [])
    assert checks[-1].boundary == "S3 publish/" and checks[-1].status == "ok"


def test_a_prefix_without_write_permission_fails_with_what_to_allow(gate):
    gate.deny_writes_under.append(f"{BUCKET}/root/predictions/")
    checks = {c.boundary: c for c in doctor.check_object_store(Environment.from_env(), [])}
    failed = {name for name, c in checks.items() if c.status == "FAIL"}
    assert failed == {"S3 predictions/"}
    check = checks["S3 predictions/"]
    assert "put of s3://mlbatch-probes/root/predictions/" in check.detail
    assert check.fix.startswith("allow s3:PutObject")
    assert f"arn:aws:s3:::{BUCKET}/root/predictions/*" in check.fix
    assert left_behind(gate) == []


def test_a_missing_bucket_says_to_create_it(gate, monkeypatch):
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", "s3://no-such-bucket-here/root")
    (check,) = doctor.check_object_store(Environment.from_env(), [])
    assert check.boundary == "object store" and check.status == "FAIL"
    assert check.fix.startswith("create the bucket of s3://no-such-bucket-here/root"), check


class TagsBeforeDelete:
    """The store's boto3 client, reading each probe's tags (over the wire) just before its delete."""

    def __init__(self, client, refuse_tagging: bool = False) -> None:
        self.client, self.refuse_tagging, self.tags = client, refuse_tagging, {}

    def put_object_tagging(self, **kwargs):
        if self.refuse_tagging:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObjectTagging")
        return self.client.put_object_tagging(**kwargs)

    def delete_object(self, **kwargs):
        self.tags[kwargs["Key"]] = self.client.get_object_tagging(**kwargs)["TagSet"]
        return self.client.delete_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_every_probe_is_tagged_for_the_lifecycle_rule(gate, monkeypatch):
    import json

    from mlbatch.cli.doctor.s3 import PROBE_TAG

    from tests.support.paths import REPO

    spy = TagsBeforeDelete(store_mod.s3_client())
    monkeypatch.setattr(doctor_s3, "s3_client", lambda: spy)  # the name the probe calls
    checks = doctor.check_object_store(Environment.from_env(), [])
    assert {c.status for c in checks} == {"ok"} and not any("tagged" in c.detail for c in checks)
    assert len(spy.tags) == 7 and all(tags == [PROBE_TAG] for tags in spy.tags.values()), spy.tags
    assert all("/_any/_mlbatch_doctor/" in key for key in spy.tags)
    assert left_behind(gate) == []
    # The tag the bucket's lifecycle rule expires (deploy/s3/lifecycle.json) is the one put here.
    rules = json.loads((REPO / "deploy" / "s3" / "lifecycle.json").read_text())["LifecycleConfiguration"]["Rules"]
    assert any(PROBE_TAG in r["Filter"].get("And", {}).get("Tags", []) for r in rules)


def test_a_refused_tag_is_noted_not_failed(gate, monkeypatch):
    spy = TagsBeforeDelete(store_mod.s3_client(), refuse_tagging=True)
    monkeypatch.setattr(doctor_s3, "s3_client", lambda: spy)  # the name the probe calls
    checks = {c.boundary: c for c in doctor.check_object_store(Environment.from_env(), [])}
    assert {c.status for c in checks.values()} == {"ok"}
    assert "allow s3:PutObjectTagging" in checks["S3 models/"].detail
    assert all(tags == [] for tags in spy.tags.values()) and left_behind(gate) == []
