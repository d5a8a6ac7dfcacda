"""The object store's local side under threads, and how it picks S3 credentials."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlbatch.backends import store as store_mod
from mlbatch.backends.store import ObjectStore


def test_threads_writing_one_key_never_collide(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path.as_uri())
    payloads = [bytes([i]) * 100_000 for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        uris = list(pool.map(lambda p: store.put_bytes("runs/x/state.json", p), payloads))
    assert set(uris) == {store.uri("runs/x/state.json")}
    assert store.get_bytes("runs/x/state.json") in payloads  # one whole write won, none mixed
    assert store.list("runs/x/") == ["runs/x/state.json"]  # no temporary file left behind


def test_aws_connection_is_used_inside_airflow_tasks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLBATCH_AWS_CONN_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    assert store_mod.aws_conn_id() is None  # CLI, tests, benchmarks: the standard AWS chain
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "device_gender__score")
    assert store_mod.aws_conn_id() == "aws_default"
    monkeypatch.setenv("MLBATCH_AWS_CONN_ID", "aws_mlbatch")
    assert store_mod.aws_conn_id() == "aws_mlbatch"


def test_s3_settings_come_from_the_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = '{"conn_type": "aws", "login": "AKIDCONN", "password": "conn-secret", "extra": {"region_name": "eu-west-1"}}'
    monkeypatch.setenv("AIRFLOW_CONN_AWS_MLBATCH", conn)
    monkeypatch.setenv("MLBATCH_AWS_CONN_ID", "aws_mlbatch")
    settings = store_mod._s3_settings()
    assert settings.region == "eu-west-1"
    assert settings.credentials is not None and settings.credentials[:2] == ("AKIDCONN", "conn-secret")
    assert "conn-secret" not in repr(settings) and "conn-secret" not in str(settings.cache_key())
    fs = store_mod.s3_filesystem()
    assert fs.region == "eu-west-1" and store_mod.s3_filesystem() is fs
