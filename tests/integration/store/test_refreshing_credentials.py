"""The object store with credentials that expire: a stream outlives several of them.

The worker's role hands out keys through the ECS container credentials endpoint
(``AWS_CONTAINER_CREDENTIALS_FULL_URI``, what the ECS agent serves; IRSA's web identity and the
instance profile refresh the same way). Here each key lives 2 seconds, and the S3 in front of
moto refuses a request signed with an expired one (``ExpiredToken``), as S3 does. The Airflow
connection names no keys, so every client must walk the default chain and refresh: a parquet
stream of many row groups read over ~4 key lifetimes completes, and so do whole-object GETs.

Before the fix the connection's credentials were copied out once (``S3Hook.get_credentials``)
and frozen into pyarrow's filesystem and the boto3 client: the same stream failed with
``ExpiredToken`` after its first key expired.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends import store as store_mod
from mlbatch.backends.store import iter_parquet, read_object

from tests.fakes.aws_gates import S3Gate, ShortLivedCredentials

LIFETIME_S = 2.0
BUCKET = "mlbatch-refresh"
ROW_GROUPS, GROUP_ROWS = 24, 2_000
ADMIN_KEY = "AKIAADMINSETUP"  # the test's own key, for creating the bucket only


def _clear_store_caches() -> None:
    store_mod._S3_CACHE.clear()
    store_mod._BOTO_CACHE.clear()
    store_mod._connection_settings.cache_clear()


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ShortLivedCredentials, S3Gate, str]]:
    with ShortLivedCredentials(LIFETIME_S) as creds, S3Gate(creds, static_keys={ADMIN_KEY, "AKIASTATICKEY"}) as gate:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", creds.uri)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance profile to fall back on
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        # The Airflow connection of a worker on AWS: region and endpoint, no keys.
        worker = {"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": gate.endpoint}}
        monkeypatch.setenv("AIRFLOW_CONN_AWS_WORKER_ROLE", json.dumps(worker))
        monkeypatch.setenv("MLBATCH_AWS_CONN_ID", "aws_worker_role")
        admin = boto3.client(
            "s3",
            endpoint_url=gate.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ADMIN_KEY,
            aws_secret_access_key="admin",  # noqa: S106 - the gate checks key ids only
        )
        admin.create_bucket(Bucket=BUCKET)
        table = pa.table(
            {"k": pa.array(range(ROW_GROUPS * GROUP_ROWS)), "v": pa.array([1.5] * ROW_GROUPS * GROUP_ROWS)}
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=GROUP_ROWS)
        admin.put_object(Bucket=BUCKET, Key="unload/m/part-0000.parquet", Body=sink.getvalue())
        _clear_store_caches()
        yield creds, gate, f"s3://{BUCKET}/unload/m/part-0000.parquet"
        _clear_store_caches()


def test_a_parquet_stream_outlives_several_credential_lifetimes(stack) -> None:
    creds, gate, uri = stack
    started, rows, groups = time.monotonic(), 0, 0
    for batch in iter_parquet([uri], batch_rows=GROUP_ROWS):
        rows += batch.num_rows
        groups += 1
        time.sleep(0.35)  # a slow consumer: 24 row groups take ~8.4 s, four key lifetimes
    elapsed = time.monotonic() - started
    assert rows == ROW_GROUPS * GROUP_ROWS and groups == ROW_GROUPS
    assert elapsed > 3 * LIFETIME_S, f"the stream took {elapsed:.1f} s: too short to prove anything"
    assert gate.rejected == [], gate.rejected
    used = gate.accepted_keys & set(creds.issued)
    assert len(used) >= 3, f"the stream signed with {sorted(used)}: its credentials were not refreshed"


def test_whole_object_gets_refresh_too(stack) -> None:
    creds, gate, uri = stack
    size = store_mod.s3_client().head_object(Bucket=BUCKET, Key="unload/m/part-0000.parquet")["ContentLength"]
    for _ in range(3):
        assert read_object(uri, size).size == size
        time.sleep(LIFETIME_S + 0.5)  # the key that signed the last GET has expired by now
    assert gate.rejected == [], gate.rejected
    assert len(gate.accepted_keys & set(creds.issued)) >= 3


def test_static_keys_in_the_connection_keep_working(stack, monkeypatch: pytest.MonkeyPatch) -> None:
    creds, gate, uri = stack
    static = {
        "conn_type": "aws",
        "login": "AKIASTATICKEY",
        "password": "static-secret",
        "extra": {"region_name": "us-east-1", "endpoint_url": gate.endpoint},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_STATIC", json.dumps(static))
    monkeypatch.setenv("MLBATCH_AWS_CONN_ID", "aws_static")
    _clear_store_caches()
    issued_before = len(creds.issued)
    rows = sum(b.num_rows for b in iter_parquet([uri], batch_rows=GROUP_ROWS))
    size = store_mod.s3_client().head_object(Bucket=BUCKET, Key="unload/m/part-0000.parquet")["ContentLength"]
    assert read_object(uri, size).size == size
    assert rows == ROW_GROUPS * GROUP_ROWS
    assert gate.rejected == []
    assert gate.accepted_keys - {ADMIN_KEY} == {"AKIASTATICKEY"}
    assert len(creds.issued) == issued_before, "static keys must not fall back to the container endpoint"
