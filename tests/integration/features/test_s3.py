"""Unload and reader against a real S3 API (moto's server on 127.0.0.1), through production code.

The embedded warehouse unloads the device_gender training query into ``s3://`` exactly as it
does into a local folder; the reader reads both through one interface. The Redshift side runs
its real UNLOAD path with the Data API stubbed at the boto3 boundary and a fake UNLOAD (the
DuckDB unload) writing parts and a Redshift manifest to the S3 server when the statement runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook
from botocore.stub import Stubber
from mlbatch import store as store_mod
from mlbatch.features.reader import iter_batches, read_manifest, read_table
from mlbatch.features.sql import to_duckdb, unload_statement
from mlbatch.store import ObjectStore
from mlbatch.warehouse.duckdb_warehouse import DuckDBWarehouse
from mlbatch.warehouse.redshift import RedshiftConfig, RedshiftStatementError, RedshiftWarehouse

from tests.support.warehouse import device_gender_training_query, synth_warehouse

DS = "2026-11-22"
PREFIX = "unload/device_gender/train/2026-11-22/run-1/"
ROLE = "arn:aws:iam::123456789012:role/mlbatch-redshift"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> DuckDBWarehouse:
    return DuckDBWarehouse(synth_warehouse(tmp_path_factory, n_devices=20_000))


@pytest.fixture(scope="module")
def training_query() -> str:
    return device_gender_training_query(DS)


@pytest.fixture
def bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> ObjectStore:
    name = "mlbatch-" + request.node.name.replace("_", "-")[:40].lower()
    boto3.client("s3").create_bucket(Bucket=name)
    return ObjectStore(f"s3://{name}/root")


def test_unload_to_s3_reads_back_like_local(
    bucket: ObjectStore, warehouse: DuckDBWarehouse, training_query: str, tmp_path: Path
) -> None:
    uri = warehouse.unload(training_query, bucket, PREFIX, slices=4)
    assert uri == bucket.uri(PREFIX + "manifest")
    manifest = read_manifest(bucket, uri)
    assert len(manifest.entries) >= 2 and all(e.url.startswith(bucket.uri(PREFIX)) for e in manifest.entries)
    ((count,),) = warehouse.query(f"SELECT count(*) FROM ({to_duckdb(training_query)})")
    rows, parts_rows = 0, {}
    for batch in iter_batches(uri, max_bytes_in_flight=2**20, batch_rows=4096):
        rows += batch.num_rows
        assert batch.schema.names == manifest.columns
    assert rows == manifest.record_count == count
    for entry in manifest.entries:  # every part holds what the manifest says
        parts_rows[entry.url] = pq.ParquetFile(pa.BufferReader(bucket.get_bytes(bucket.key(entry.url)))).metadata
        assert parts_rows[entry.url].num_rows == entry.meta.record_count
    local = ObjectStore(tmp_path.as_uri())
    from_s3 = read_table(uri).sort_by("device_id")
    from_local = read_table(warehouse.unload(training_query, local, PREFIX, slices=4)).sort_by("device_id")
    assert from_s3.equals(from_local)
    # Parts over the whole-part size are read row group by row group (ranged GETs): same rows.
    by_row_group = pa.Table.from_batches(list(iter_batches(uri, whole_part_bytes=0))).sort_by("device_id")
    assert by_row_group.equals(from_s3)
    assert from_s3.schema.names[0] == "device_id" and from_s3.num_rows == count


def test_s3_filesystem_is_built_once_per_endpoint_and_credentials(bucket: ObjectStore, monkeypatch) -> None:
    bucket.put_bytes("a/x", b"1")
    fs = store_mod.s3_filesystem()
    assert store_mod.s3_filesystem() is fs and bucket.get_bytes("a/x") == b"1"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated")
    assert store_mod.s3_filesystem() is not fs  # new credentials: a new filesystem
    assert bucket.get_bytes("a/x") == b"1"  # moto accepts any key


@pytest.fixture
def redshift() -> tuple[RedshiftWarehouse, Stubber, boto3.client]:
    client = boto3.client("redshift-data", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    hook = RedshiftDataHook(aws_conn_id=None)
    hook.conn = client
    config = RedshiftConfig(database="dev", iam_role=ROLE, workgroup_name="analytics")
    wh = RedshiftWarehouse("redshift_default", config=config, hook=hook, poll_interval=0)
    with Stubber(client) as stubber:
        yield wh, stubber, client
        stubber.assert_no_pending_responses()


def _expect(stubber: Stubber, op: str, sql_field: str, sql, statement_id: str, states: list[dict]) -> None:
    target = {"WorkgroupName": "analytics", "Database": "dev", "WithEvent": False}
    stubber.add_response(op, {"Id": statement_id}, {sql_field: sql, **target})
    for state in states:
        stubber.add_response("describe_statement", {"Id": statement_id, **state}, {"Id": statement_id})


def test_redshift_unload_runs_unload_then_reads_the_manifest_from_s3(
    bucket: ObjectStore, warehouse: DuckDBWarehouse, training_query: str, redshift
) -> None:
    wh, stubber, client = redshift
    expected_sql = unload_statement(training_query, s3_prefix=bucket.uri(PREFIX), iam_role=ROLE)
    _expect(stubber, "execute_statement", "Sql", expected_sql, "u-1", [{"Status": "STARTED"}, {"Status": "FINISHED"}])

    def fake_unload(**_: object) -> None:  # what Redshift does while the statement runs
        warehouse.unload(training_query, bucket, PREFIX, slices=3)

    client.meta.events.register("after-call.redshift-data.ExecuteStatement", fake_unload)
    uri = wh.unload(training_query, bucket, PREFIX)
    assert uri == bucket.uri(PREFIX + "manifest")
    ((count,),) = warehouse.query(f"SELECT count(*) FROM ({to_duckdb(training_query)})")
    assert read_manifest(bucket, uri).record_count == count == read_table(uri, columns=["device_id"]).num_rows


def test_redshift_unload_failure_and_missing_manifest(bucket: ObjectStore, training_query: str, redshift) -> None:
    wh, stubber, _ = redshift
    sql = unload_statement(training_query, s3_prefix=bucket.uri(PREFIX), iam_role=ROLE)
    error = "ERROR: S3ServiceException:Access Denied,Status 403"
    _expect(stubber, "execute_statement", "Sql", sql, "u-2", [{"Status": "FAILED", "Error": error}])
    with pytest.raises(RedshiftStatementError, match=r"u-2 FAILED: ERROR: S3ServiceException:Access Denied"):
        wh.unload(training_query, bucket, PREFIX)
    _expect(stubber, "execute_statement", "Sql", sql, "u-3", [{"Status": "FINISHED"}])
    with pytest.raises(Exception, match=r"UNLOAD u-3 finished but wrote no readable manifest"):
        wh.unload(training_query, bucket, PREFIX)


def _export_file(bucket: ObjectStore, key: str) -> str:
    t = pa.table(
        {
            "entity_key": pa.array([1, 2], pa.int64()),
            "ds": ["2026-11-22"] * 2,
            "model_version": ["v1"] * 2,
            "label": ["male", "female"],
            "score": [0.9, 0.2],
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    return bucket.put_bytes(key, sink.getvalue().to_pybytes())


def test_redshift_replace_day_is_one_batch_then_counts(bucket: ObjectStore, redshift) -> None:
    wh, stubber, _ = redshift
    table, folder = "ml_exports.device_gender_predictions", "export/device_gender/2026-11-22/"
    uri = _export_file(bucket, folder + "part-0000.parquet")
    sqls = [
        "CREATE SCHEMA IF NOT EXISTS ml_exports",
        f"CREATE TABLE IF NOT EXISTS {table} (entity_key BIGINT NOT NULL, ds DATE NOT NULL, "
        "model_version VARCHAR(64) NOT NULL, label VARCHAR(256) NOT NULL, score DOUBLE PRECISION NOT NULL)",
        f"DELETE FROM {table} WHERE ds = '2026-11-22'",
        f"COPY {table} FROM '{bucket.uri(folder)}' IAM_ROLE '{ROLE}' FORMAT AS PARQUET",
    ]
    _expect(stubber, "batch_execute_statement", "Sqls", sqls, "b-1", [{"Status": "FINISHED"}])
    for sid, value in (("t-1", 1), ("c-1", 2)):
        stubber.add_response("execute_statement", {"Id": sid})
        stubber.add_response("describe_statement", {"Id": sid, "Status": "FINISHED"}, {"Id": sid})
        stubber.add_response("get_statement_result", {"Records": [[{"longValue": value}]]}, {"Id": sid})
    assert wh.replace_day(table, "2026-11-22", [uri], bucket) == 2
    # A stray file in the day's folder would be COPYed too: refused before anything is sent.
    _export_file(bucket, folder + "part-0001.parquet")
    with pytest.raises(ValueError, match=r"part-0001.parquet.*besides the day's files"):
        wh.replace_day(table, "2026-11-22", [uri], bucket)


def test_read_object_gets_a_whole_object_and_names_what_is_wrong(bucket: ObjectStore) -> None:
    from mlbatch.store import read_object

    uri = bucket.put_bytes("whole/part.bin", b"x" * 1000)
    assert read_object(uri, 1000).to_pybytes() == b"x" * 1000
    with pytest.raises(OSError, match=r"read 1000 bytes, its metadata says 999"):
        read_object(uri, 999)
    missing = bucket.uri("whole/missing.bin")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        read_object(missing, 10)
