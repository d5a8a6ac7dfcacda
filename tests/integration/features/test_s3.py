"""Unload and reader against a real S3 API (moto's server on 127.0.0.1), through production code.

The embedded warehouse unloads the device_gender training query into ``s3://`` exactly as it
does into a local folder; the reader reads both through one interface. Redshift's UNLOAD and
COPY run over the wire in test_redshift_wire.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends import store as store_mod
from mlbatch.backends.store import ObjectStore
from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse
from mlbatch.backends.warehouse.sql import to_duckdb
from mlbatch.features.reader import iter_batches, read_manifest, read_table

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


def test_read_object_gets_a_whole_object_and_names_what_is_wrong(bucket: ObjectStore) -> None:
    from mlbatch.backends.store import read_object

    uri = bucket.put_bytes("whole/part.bin", b"x" * 1000)
    assert read_object(uri, 1000).to_pybytes() == b"x" * 1000
    with pytest.raises(OSError, match=r"read 1000 bytes, its metadata says 999"):
        read_object(uri, 999)
    missing = bucket.uri("whole/missing.bin")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        read_object(missing, 10)
