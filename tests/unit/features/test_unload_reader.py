"""The embedded UNLOAD (DuckDB -> parquet parts + Redshift manifest) and the manifest reader."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends.store import ObjectStore
from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse, UnloadError
from mlbatch.backends.warehouse.manifest import Manifest
from mlbatch.backends.warehouse.sql import to_duckdb
from mlbatch.features.reader import ManifestMismatch, iter_batches, read_manifest, read_table

from tests.support.warehouse import device_gender_training_query, synth_warehouse

DS = "2026-11-22"
PREFIX = "unload/device_gender/train/2026-11-22/"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> DuckDBWarehouse:
    return DuckDBWarehouse(synth_warehouse(tmp_path_factory, n_devices=20_000))


@pytest.fixture(scope="module")
def training_query() -> str:
    return device_gender_training_query(DS)


@pytest.fixture(scope="module")
def unloaded(
    warehouse: DuckDBWarehouse, training_query: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ObjectStore, str]:
    store = ObjectStore(tmp_path_factory.mktemp("objects").as_uri())
    return store, warehouse.unload(training_query, store, PREFIX, slices=4)


def _copy_unload(store: ObjectStore, manifest_uri: str, tmp_path: Path) -> tuple[Path, dict]:
    """A writable copy of an unload (parts and manifest) whose manifest points at the copies."""
    manifest = json.loads(store.get_bytes(store.key(manifest_uri)))
    for entry in manifest["entries"]:
        name = entry["url"].rsplit("/", 1)[1]
        (tmp_path / name).write_bytes(store.get_bytes(store.key(entry["url"])))
        entry["url"] = (tmp_path / name).as_uri()
    return tmp_path / "manifest", manifest


def test_unload_writes_parts_then_a_consistent_manifest(
    warehouse: DuckDBWarehouse, training_query: str, unloaded: tuple[ObjectStore, str]
) -> None:
    store, manifest_uri = unloaded
    assert manifest_uri == store.uri(PREFIX + "manifest")
    manifest = read_manifest(store, manifest_uri)
    keys = store.list(PREFIX)
    parts = [k for k in keys if k != PREFIX + "manifest"]
    assert len(parts) >= 2 and len(keys) == len(parts) + 1
    assert all(re.fullmatch(re.escape(PREFIX) + r"\d{4}_part_\d{2}\.parquet", k) for k in parts)
    assert sorted(e.url for e in manifest.entries) == [store.uri(k) for k in parts]
    for entry in manifest.entries:
        key = store.key(entry.url)
        assert entry.meta.record_count == pq.ParquetFile(_local(store, key)).metadata.num_rows
        assert entry.meta.content_length == len(store.get_bytes(key))
    ((count,),) = warehouse.query(f"SELECT count(*) FROM ({to_duckdb(training_query)})")
    assert manifest.record_count == count == sum(e.meta.record_count for e in manifest.entries)
    assert manifest.meta.content_length == sum(e.meta.content_length for e in manifest.entries)
    types = {c.name: c.type.base for c in manifest.schema_.elements}
    assert manifest.columns[0] == "device_id"
    assert types["device_id"] == "bigint" and types["is_ios"] == "integer"
    assert types["share_games"] == "double precision" and types["device_age_days"] == "bigint"
    assert manifest.author["name"] == "Amazon Redshift"


def _local(store: ObjectStore, key: str) -> str:
    return store.uri(key).removeprefix("file://")


def test_reader_returns_every_row_once(warehouse: DuckDBWarehouse, training_query: str, unloaded) -> None:
    _, manifest_uri = unloaded
    table = read_table(manifest_uri)
    want = [r[0] for r in warehouse.query(f"SELECT device_id FROM ({to_duckdb(training_query)}) ORDER BY 1")]
    assert sorted(table.column("device_id").to_pylist()) == want
    assert table.column_names == read_manifest(None, manifest_uri).columns
    # Tiny byte budget: an oversized batch still passes alone, so no deadlock, same rows.
    batches = iter_batches(manifest_uri, columns=["device_id"], max_bytes_in_flight=1, batch_rows=1000)
    ids = [i for b in batches for i in b.column(0).to_pylist()]
    assert sorted(ids) == want


def test_reader_column_selection_and_unknown_column(unloaded) -> None:
    _, manifest_uri = unloaded
    table = read_table(manifest_uri, columns=["share_games", "device_id"])
    assert table.column_names == ["share_games", "device_id"]
    with pytest.raises(KeyError, match="no_such_column"):
        next(iter_batches(manifest_uri, columns=["no_such_column"]))


def test_parts_split_at_max_rows_per_file(warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path.as_uri())
    uri = warehouse.unload("SELECT device_id FROM analytics.devices", store, "u/", slices=2, max_rows_per_file=3_000)
    manifest = read_manifest(store, uri)
    assert max(e.meta.record_count for e in manifest.entries) == 3_000
    assert any(e.url.endswith("0000_part_01.parquet") for e in manifest.entries)
    assert manifest.record_count == 20_000 == read_table(uri).num_rows


def test_unload_refuses_a_non_empty_prefix(warehouse: DuckDBWarehouse, training_query: str, unloaded) -> None:
    store, _ = unloaded
    with pytest.raises(UnloadError, match=r"already holds \d+ files.*fresh prefix"):
        warehouse.unload(training_query, store, PREFIX)
    with pytest.raises(UnloadError, match="must end with '/'"):
        warehouse.unload(training_query, store, "unload/x")


def test_failed_query_leaves_the_prefix_empty(warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path.as_uri())
    with pytest.raises(UnloadError, match="no_such_column"):
        warehouse.unload("SELECT no_such_column FROM analytics.devices", store, "u/")
    assert store.list("u/") == []


def test_tampered_record_count_names_the_file(unloaded, tmp_path: Path) -> None:
    store, manifest_uri = unloaded
    path, manifest = _copy_unload(store, manifest_uri, tmp_path)
    entry = manifest["entries"][1]
    real = entry["meta"]["record_count"]
    entry["meta"]["record_count"] += 7
    manifest["meta"]["record_count"] += 7
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        ManifestMismatch, match=rf"{re.escape(entry['url'])}: holds {real} rows but .*record_count={real + 7}"
    ):
        read_table(path.as_uri())
    # Changing an entry without the total is caught by the manifest's own check.
    manifest["meta"]["record_count"] -= 7
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="entries hold"):
        read_table(path.as_uri())


def test_renamed_column_names_the_file(unloaded, tmp_path: Path) -> None:
    store, manifest_uri = unloaded
    path, manifest = _copy_unload(store, manifest_uri, tmp_path)
    manifest["schema"]["elements"][2]["name"] = "renamed"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestMismatch, match=r"columns .* differ from the manifest"):
        read_table(path.as_uri())


def test_missing_part_propagates_with_its_uri(unloaded, tmp_path: Path) -> None:
    store, manifest_uri = unloaded
    path, manifest = _copy_unload(store, manifest_uri, tmp_path)
    gone = manifest["entries"][-1]["url"]
    Path(gone.removeprefix("file://")).unlink()
    path.write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=re.escape(gone)):
        read_table(path.as_uri())
    _no_reader_threads_left()


def test_abandoning_the_generator_stops_the_workers(unloaded) -> None:
    _, manifest_uri = unloaded
    batches = iter_batches(manifest_uri, max_bytes_in_flight=1, batch_rows=500, threads=4)
    next(batches)
    batches.close()
    _no_reader_threads_left()


def test_read_manifest_errors_name_the_uri(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape((tmp_path / "manifest").as_uri())):
        read_manifest(None, (tmp_path / "manifest").as_uri())
    (tmp_path / "manifest").write_text("{}")
    with pytest.raises(ValueError, match=re.escape((tmp_path / "manifest").as_uri())):
        read_manifest(None, (tmp_path / "manifest").as_uri())


def test_empty_result_gives_an_empty_manifest_and_table(warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path.as_uri())
    uri = warehouse.unload("SELECT device_id, os FROM analytics.devices WHERE 1 = 0", store, "u/")
    manifest = Manifest.parse(store.get_bytes("u/manifest"))
    assert manifest.entries == [] and manifest.record_count == 0
    table = read_table(uri)
    assert table.num_rows == 0 and table.column_names == ["device_id", "os"]


def _no_reader_threads_left(timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while any(t.name.startswith("manifest-reader") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "reader threads still running"
        time.sleep(0.05)


def test_writer_error_stops_the_unload_and_cleans_up(
    warehouse: DuckDBWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlbatch.backends.warehouse import duckdb_warehouse

    real_write = duckdb_warehouse._SliceWriter.write

    def flaky(self, batch):  # slice 1 fails on its first batch, after slice 0 wrote a part
        if self.slice_no == 1:
            raise OSError(f"disk full writing slice {self.slice_no}")
        real_write(self, batch)

    monkeypatch.setattr(duckdb_warehouse._SliceWriter, "write", flaky)
    store = ObjectStore(tmp_path.as_uri())
    with pytest.raises(OSError, match="disk full writing slice 1"):
        warehouse.unload("SELECT * FROM analytics.devices", store, "u/", slices=2)
    assert store.list("u/") == []


def test_bytes_waiting_stay_within_the_budget(unloaded, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlbatch.features import reader

    _, manifest_uri = unloaded
    # One batch's size, measured before recording starts and with its reader closed: an open
    # reader's worker would go on filling its own budget and be counted here.
    first = iter_batches(manifest_uri, batch_rows=1000, threads=1)
    one_batch = next(first).nbytes
    first.close()
    limit = 3 * one_batch
    peaks: list[int] = []
    real_acquire = reader._Budget.acquire

    def recording(self, n: int) -> bool:
        ok = real_acquire(self, n)
        if self.limit == limit:  # this reader's budget only (a closed reader's thread may linger)
            peaks.append(self.used)
        return ok

    monkeypatch.setattr(reader._Budget, "acquire", recording)
    rows = 0
    for i, batch in enumerate(iter_batches(manifest_uri, max_bytes_in_flight=limit, batch_rows=1000, threads=4)):
        if i == 0:
            # A slow consumer: before taking anything more, let the workers fill the budget (on a
            # busy machine a fixed sleep per batch may not give them the CPU to run ahead).
            deadline = time.monotonic() + 10
            while max(peaks, default=0) < 2 * one_batch and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.001)
        rows += batch.num_rows
    assert rows == read_manifest(None, manifest_uri).record_count
    assert max(peaks) <= limit + one_batch  # within one (last-admitted) batch of the limit
    assert max(peaks) >= 2 * one_batch  # the workers did run ahead of the consumer


def test_expected_columns_are_checked_before_reading(unloaded) -> None:
    _, manifest_uri = unloaded
    columns = read_manifest(None, manifest_uri).columns
    assert sum(b.num_rows for b in iter_batches(manifest_uri, expected_columns=columns)) > 0
    with pytest.raises(ManifestMismatch, match=r"missing \['gender'\], unexpected \[\]"):
        next(iter_batches(manifest_uri, expected_columns=[*columns, "gender"]))


@pytest.mark.parametrize("whole_part_bytes", [0, 2**30], ids=["row-group-reads", "whole-part-reads"])
def test_both_read_paths_return_the_same_rows_and_check_counts(unloaded, tmp_path: Path, whole_part_bytes: int) -> None:
    """Parts over ``whole_part_bytes`` are read row group by row group; smaller ones in one read."""
    store, manifest_uri = unloaded
    path, manifest = _copy_unload(store, manifest_uri, tmp_path)
    for entry in manifest["entries"]:  # several row groups per part, so both paths loop over them
        part = Path(entry["url"].removeprefix("file://"))
        pq.write_table(pq.read_table(part), part, row_group_size=997)
        assert pq.ParquetFile(part).num_row_groups > 1
        entry["meta"]["content_length"] = part.stat().st_size
    path.write_text(json.dumps(manifest))
    want = read_table(manifest_uri).sort_by("device_id")
    batches = list(iter_batches(path.as_uri(), batch_rows=400, whole_part_bytes=whole_part_bytes, threads=2))
    assert max(b.num_rows for b in batches) == 400
    assert pa.Table.from_batches(batches).sort_by("device_id").equals(want)
    manifest["entries"][0]["meta"]["record_count"] += 1
    manifest["meta"]["record_count"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestMismatch, match="record_count="):
        list(iter_batches(path.as_uri(), whole_part_bytes=whole_part_bytes))
