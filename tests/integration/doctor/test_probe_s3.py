"""The object store probe writes, lists, reads and deletes under every prefix a run writes: a
prefix the workers' policy does not let them write FAILs with the action and resource to allow."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from mlbatch import doctor
from mlbatch import store as store_mod
from mlbatch.env import Environment

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
