"""RedshiftWarehouse end to end over the HTTP wire: the production clients against a Data API that executes.

Nothing of the production path is stubbed: ``RedshiftWarehouse.from_url`` builds the amazon
provider's ``RedshiftDataHook`` from an Airflow connection in the environment, its boto3 client
(and the trigger's aiobotocore client) talk HTTP to one :class:`AwsEndpoint`, where
:class:`RedshiftDataDouble` runs each statement on a synthetic DuckDB warehouse and S3 is moto's.
The double checks every request and its own responses against botocore's model; each test ends
asserting it recorded nothing invalid.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import date

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends.store import ObjectStore
from mlbatch.backends.warehouse.errors import RedshiftStatementError
from mlbatch.backends.warehouse.redshift import RedshiftWarehouse
from mlbatch.backends.warehouse.sql import to_duckdb, unload_statement
from mlbatch.features.reader import read_manifest, read_table

from devtools.devservers import free_port
from devtools.devservers.aws_wire import AwsEndpoint, aws_environment
from devtools.devservers.redshift_data_double import RedshiftDataDouble
from tests.support.warehouse import device_gender_training_query, synth_warehouse

DS = "2026-11-22"
ROLE = "arn:aws:iam::123456789012:role/mlbatch-redshift"
TABLE = "ml_exports.device_gender_predictions"
CONN = "mlbatch_redshift"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AwsEndpoint, RedshiftDataDouble]]:
    port = free_port()
    double = RedshiftDataDouble(
        synth_warehouse(tmp_path_factory, n_devices=20_000), s3_endpoint=f"http://127.0.0.1:{port}"
    )
    with AwsEndpoint([double], port=port) as endpoint:
        yield endpoint, double


@pytest.fixture
def double(
    aws: tuple[AwsEndpoint, RedshiftDataDouble], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedshiftDataDouble]:
    endpoint, rsd = aws
    for key, value in {**aws_environment(endpoint.endpoint), "AWS_ENDPOINT_URL_S3": endpoint.endpoint}.items():
        monkeypatch.setenv(key, value)
    extra = {
        "endpoint_url": endpoint.endpoint,
        "region_name": "us-east-1",
        "cluster_identifier": "analytics",
        "database": "dev",
        "db_user": "mlbatch",
        "iam_role": ROLE,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps({"conn_type": "aws", "extra": extra}))
    rsd.grants.reset()
    rsd.min_duration = 0.0
    yield rsd
    rsd.wait_idle()
    assert rsd.invalid == []


@pytest.fixture
def wh(double: RedshiftDataDouble) -> RedshiftWarehouse:
    warehouse = RedshiftWarehouse.from_url(f"redshift://{CONN}")  # no hook: the provider's, from the connection
    warehouse.poll_interval = 0.1
    return warehouse


@pytest.fixture
def store(double: RedshiftDataDouble, request: pytest.FixtureRequest) -> ObjectStore:
    name = "rs-" + request.node.name.replace("_", "-")[:50].lower().strip("-")
    boto3.client("s3").create_bucket(Bucket=name)
    return ObjectStore(f"s3://{name}/root")


def _describe(statement_id: str) -> dict:
    return boto3.client("redshift-data").describe_statement(Id=statement_id)


def _until(statement_id: str, *states: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while (desc := _describe(statement_id))["Status"] not in states:
        assert desc["Status"] in ("SUBMITTED", "PICKED", "STARTED"), (
            f"{statement_id} {desc['Status']}: {desc.get('Error')}"
        )
        assert time.monotonic() < deadline, f"{statement_id} still {desc['Status']}, expected one of {states}"
        time.sleep(0.05)
    return desc


# --- (a) the unload of the shipped training query -----------------------------------------------


def test_unload_writes_parts_and_a_redshift_manifest_the_reader_reads(wh, double, store) -> None:
    query = device_gender_training_query(DS)
    prefix = "unload/device_gender/train/2026-11-22/run-1/"
    statement_id = wh.start_unload(query, store, prefix)  # as the features stage does: start, wait, finish
    wh.wait(statement_id, "UNLOAD")
    uri = wh.finish_unload(store, prefix, statement_id)

    assert uri == store.uri(prefix + "manifest")
    assert double.executed("FINISHED")[-1] == unload_statement(query, s3_prefix=store.uri(prefix), iam_role=ROLE)
    ((expected,),) = double.query(f"SELECT count(*) FROM ({to_duckdb(query)})")
    manifest = read_manifest(store, uri)
    assert len(manifest.entries) >= 2 and all(e.url.startswith(store.uri(prefix)) for e in manifest.entries)
    assert manifest.record_count == expected == read_table(uri).num_rows > 1000
    assert manifest.columns[:3] == ["device_id", "device_age_days", "is_ios"]
    assert {e.name: e.type.base for e in manifest.schema_.elements}["device_id"] == "bigint"
    for entry in manifest.entries:
        body = store.get_bytes(store.key(entry.url))
        assert len(body) == entry.meta.content_length
        assert pq.ParquetFile(pa.BufferReader(body)).metadata.num_rows == entry.meta.record_count
    assert _describe(statement_id)["ResultRows"] == expected


# --- (b) the export: DELETE + COPY in one transaction ------------------------------------------


def _export_file(store: ObjectStore, day: str, rows: int, version: str) -> str:
    table = pa.table(
        {
            "entity_key": pa.array(range(10_000_000, 10_000_000 + rows), pa.int64()),
            "ds": pa.array([date.fromisoformat(day)] * rows, pa.date32()),
            "model_version": [version] * rows,
            "label": ["female" if n % 3 else "male" for n in range(rows)],
            "score": [n / rows for n in range(rows)],
        }
    )
    key = f"export/device_gender/{day}/part-0000.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put_bytes(key, sink.getvalue().to_pybytes())
    return store.uri(key)


def test_replace_day_is_one_batch_idempotent_and_transactional(wh, double, store) -> None:
    assert wh.count_day(TABLE, DS) == 0 and wh.latest_day(TABLE) is None  # no table yet
    other = _export_file(store, "2026-11-21", 50, "v1")
    assert wh.replace_day(TABLE, "2026-11-21", [other], store) == 50
    uri = _export_file(store, DS, 120, "v1")
    assert wh.replace_day(TABLE, DS, [uri], store) == 120
    batch = double.calls("BatchExecuteStatement")[-1]
    assert [s.split()[0] for s in batch["Sqls"]] == ["CREATE", "CREATE", "DELETE", "COPY"]
    assert batch["ClusterIdentifier"] == "analytics" and batch["DbUser"] == "mlbatch"

    uri = _export_file(store, DS, 80, "v2")  # a rerun replaces the day, never appends
    assert wh.replace_day(TABLE, DS, [uri], store) == 80
    assert wh.replace_day(TABLE, DS, [uri], store) == 80
    assert double.query(f"SELECT DISTINCT model_version FROM {TABLE} WHERE ds = ?::DATE", [DS]) == [("v2",)]
    assert wh.count_day(TABLE, "2026-11-21") == 50 and wh.latest_day(TABLE) == DS

    double.fail_next("S3ServiceException:Access Denied,Status 403", match="COPY")
    with pytest.raises(RedshiftStatementError, match="FAILED: ERROR: S3ServiceException:Access Denied") as failed:
        wh.replace_day(TABLE, DS, [_export_file(store, DS, 30, "v3")], store)
    assert wh.count_day(TABLE, DS) == 80  # the DELETE before the failed COPY was rolled back
    subs = _describe(failed.value.statement_id)["SubStatements"]
    assert [s["Status"] for s in subs] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    assert "replace ml_exports.device_gender_predictions ds=2026-11-22" in str(failed.value)

    # No fault injected: a file whose columns do not match the table's fails in COPY itself.
    narrow = pa.table({"entity_key": pa.array([1, 2], pa.int64()), "ds": pa.array([date(2026, 11, 22)] * 2)})
    sink = pa.BufferOutputStream()
    pq.write_table(narrow, sink)
    store.put_bytes(f"export/device_gender/{DS}/part-0000.parquet", sink.getvalue().to_pybytes())
    with pytest.raises(RedshiftStatementError, match="incompatible Parquet schema"):
        wh.replace_day(TABLE, DS, [store.uri(f"export/device_gender/{DS}/part-0000.parquet")], store)
    assert wh.count_day(TABLE, DS) == 80
    # A label over the table's VARCHAR(256) (bytes, as Redshift counts them) fails the load.
    long_label = pa.table({"entity_key": pa.array([1], pa.int64()), "ds": pa.array([date(2026, 11, 22)])})
    long_label = long_label.append_column("model_version", pa.array(["v4"])).append_column(
        "label", pa.array(["é" * 129])
    )
    sink = pa.BufferOutputStream()
    pq.write_table(long_label.append_column("score", pa.array([0.5])), sink)
    store.put_bytes(f"export/device_gender/{DS}/part-0000.parquet", sink.getvalue().to_pybytes())
    with pytest.raises(RedshiftStatementError, match="Load into table 'device_gender_predictions' failed"):
        wh.replace_day(TABLE, DS, [store.uri(f"export/device_gender/{DS}/part-0000.parquet")], store)
    assert wh.count_day(TABLE, DS) == 80


def test_statement_seconds_are_the_data_api_s_duration(wh, double) -> None:
    """The run's cost line takes a statement's warehouse seconds from DescribeStatement's
    Duration, not from the polling around it."""
    double.min_duration = 0.4
    statement_id = wh.run("SELECT 1")
    assert 0.4 <= wh.statement_seconds(statement_id) < 5
    assert wh.statement_seconds("00000000-0000-0000-0000-000000000000") is None  # unknown: nothing to say


def test_a_stray_file_in_the_day_s_folder_is_refused_before_anything_is_sent(wh, double, store) -> None:
    """COPY from the day's folder would load every object in it: a file that is not one of the
    day's is refused before the batch is submitted."""
    uri = _export_file(store, DS, 10, "v1")
    store.put_bytes(f"export/device_gender/{DS}/part-0099.parquet", b"not the day's")
    sent = len(double.calls("BatchExecuteStatement"))
    with pytest.raises(ValueError, match=r"part-0099.parquet.*besides the day's files"):
        wh.replace_day(TABLE, DS, [uri], store)
    assert len(double.calls("BatchExecuteStatement")) == sent


def test_copy_from_an_unload_manifest_loads_what_the_unload_wrote(wh, double, store) -> None:
    query = "SELECT device_id, country FROM analytics.devices WHERE device_id % 10 = 0"
    manifest = wh.unload(query, store, "unload/roundtrip/")
    wh.run(
        [
            "CREATE SCHEMA IF NOT EXISTS ml_scratch",
            "CREATE TABLE ml_scratch.roundtrip (device_id BIGINT NOT NULL, country VARCHAR(2))",
            f"COPY ml_scratch.roundtrip FROM '{manifest}' IAM_ROLE '{ROLE}' FORMAT AS PARQUET MANIFEST",
        ]
    )
    ((unloaded,),) = double.query(f"SELECT count(*) FROM ({to_duckdb(query)})")
    assert (
        wh.query_value("SELECT COUNT(*) FROM ml_scratch.roundtrip")
        == unloaded
        == read_manifest(store, manifest).record_count
    )


def test_count_and_latest_day_bind_their_values(wh, double) -> None:
    assert wh.count_day("ml_exports.no_such_table", DS) == 0
    sent = double.calls("ExecuteStatement")[-1]
    assert sent["Parameters"] == [{"name": "schema", "value": "ml_exports"}, {"name": "name", "value": "no_such_table"}]
    assert ":schema" in sent["Sql"] and "ml_exports" not in sent["Sql"]


# --- (c) the deferred wait: the provider's trigger, as the triggerer runs it ------------------


async def _events(trigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def test_trigger_yields_success_then_the_worker_finishes_the_unload(wh, double, store) -> None:
    double.min_duration = 1.5  # still STARTED when the trigger polls: it waits through aiobotocore
    prefix = "unload/deferred/"
    statement_id = wh.start_unload(device_gender_training_query(DS), store, prefix)
    events = asyncio.run(_events(wh.trigger(statement_id)))
    assert events == [{"status": "success", "statement_id": statement_id}]
    wh.check_event(events[0], "UNLOAD")
    assert read_manifest(store, wh.finish_unload(store, prefix, statement_id)).record_count > 1000
    polls = [c for c in double.calls("DescribeStatement") if c["Id"] == statement_id]
    assert len(polls) >= 3  # polled while STARTED, polled once ended, then the finished check


def test_trigger_yields_the_failure_and_check_event_raises_redshift_s_error(wh, double) -> None:
    double.fail_next('relation "analytics.devices" does not exist')
    statement_id = wh.submit("SELECT COUNT(*) FROM analytics.devices")
    (event,) = asyncio.run(_events(wh.trigger(statement_id)))
    assert event["status"] == "error" and event["type"] == "FAILED" and event["statement_id"] == statement_id
    with pytest.raises(RedshiftStatementError) as failed:
        wh.check_event(event, "UNLOAD into s3://b/x/")
    assert str(failed.value).startswith(
        f'Redshift statement {statement_id} FAILED: ERROR: relation "analytics.devices" does not exist'
    )


# --- (d) cancel: from the worker, from an interrupted wait, from the triggerer's on_kill -----


def test_cancel_aborts_a_running_statement_within_seconds(wh, double) -> None:
    # A statement DuckDB itself would run for hours: the cancel must interrupt the engine.
    statement_id = wh.submit("SELECT COUNT(*) FROM analytics.devices a, analytics.devices b, analytics.devices c")
    _until(statement_id, "STARTED")
    time.sleep(0.3)
    started = time.monotonic()
    wh.cancel(statement_id)
    assert _until(statement_id, "ABORTED", timeout=5)["Status"] == "ABORTED"
    assert time.monotonic() - started < 5 and wh.is_running(statement_id) is False
    with pytest.raises(RedshiftStatementError, match=f"{statement_id} ABORTED"):
        wh.wait(statement_id, "SELECT")
    wh.cancel(statement_id)  # already ended: Redshift refuses, the warehouse logs it and goes on


def test_a_wait_past_its_timeout_cancels_the_statement(wh, double) -> None:
    double.min_duration = 30
    wh.timeout = 0.5
    with pytest.raises(RedshiftStatementError, match="TIMED OUT: still STARTED after 0 s") as info:
        wh.run("SELECT 1")
    assert _until(info.value.statement_id, "ABORTED")["Status"] == "ABORTED"


def test_a_retry_asks_whether_the_earlier_statement_still_runs(wh, double) -> None:
    double.min_duration = 30
    running = wh.submit("SELECT 1")
    assert wh.is_running(running) is True  # its worker died: the retry waits for it, submits nothing
    wh.cancel(running)
    _until(running, "ABORTED")
    assert wh.is_running(running) is False  # cancelled by on_kill: start afresh
    assert wh.is_running("4b9c5c6e-0000-4000-8000-000000000000") is False  # expired (24 h): forgotten


def test_an_interrupted_wait_cancels_its_statement(wh, double, monkeypatch) -> None:
    double.min_duration = 30

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("mlbatch.backends.warehouse.redshift.time.sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        wh.run("SELECT 1")
    statement_id = double.calls("ExecuteStatement")[-1]
    (cancelled,) = double.calls("CancelStatement")[-1:]
    assert _until(cancelled["Id"], "ABORTED")["QueryString"] == statement_id["Sql"]


def test_the_trigger_s_on_kill_cancels_the_statement(wh, double, store) -> None:
    assert wh.trigger("x").cancel_on_kill is True
    double.min_duration = 30
    statement_id = wh.start_unload(device_gender_training_query(DS), store, "unload/killed/")
    _until(statement_id, "STARTED")
    trigger = wh.trigger(statement_id)

    async def triggerer() -> list[dict]:
        waiting = asyncio.create_task(_events(trigger))
        await asyncio.sleep(1.5)  # the trigger is polling when a person marks the task failed
        await trigger.on_kill()
        return await asyncio.wait_for(waiting, timeout=10)

    started = time.monotonic()
    (event,) = asyncio.run(triggerer())
    assert event["status"] == "error" and event["type"] == "ABORTED"
    assert time.monotonic() - started < 10 and _describe(statement_id)["Status"] == "ABORTED"
    assert store.list("unload/killed/") == []  # cancelled before it wrote anything


def test_close_interrupts_and_joins_running_statements(tmp_path) -> None:
    import duckdb

    path = tmp_path / "small.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS n FROM range(100000)")
    rsd = RedshiftDataDouble(path, endpoint_url="http://127.0.0.1:9")  # no HTTP: the operations called directly
    sql = "SELECT COUNT(*) FROM t a, t b, t c"
    slow = rsd.handle("ExecuteStatement", {"Sql": sql, "WorkgroupName": "analytics", "Database": "dev"})["Id"]
    deadline = time.monotonic() + 10
    while rsd.handle("DescribeStatement", {"Id": slow})["Status"] != "STARTED":
        assert time.monotonic() < deadline
    time.sleep(0.3)
    started = time.monotonic()
    rsd.close()
    assert time.monotonic() - started < 5 and rsd.statement(slow).status == "ABORTED"
    assert rsd.history[-1].sql == sql and rsd.history[-1].status == "ABORTED" and rsd.invalid == []


# --- (e) privileges --------------------------------------------------------------------------


def test_a_revoked_privilege_fails_the_statement_with_redshift_s_message(wh, double, store) -> None:
    assert wh.query_value("SELECT current_user") == "mlbatch"
    assert wh.query_value("SELECT has_schema_privilege(current_user, :s, 'CREATE')", {"s": "ml_exports"}) is True

    double.grants.revoke("CREATE", "ml_exports")
    assert wh.query_value("SELECT has_schema_privilege(current_user, :s, 'CREATE')", {"s": "ml_exports"}) is False
    day = _export_file(store, DS, 10, "v1")
    with pytest.raises(RedshiftStatementError, match="FAILED: ERROR: permission denied for schema ml_exports") as info:
        wh.replace_day("ml_exports.revoked_predictions", DS, [day], store)
    assert info.value.statement_id in str(info.value) and "replace ml_exports.revoked_predictions" in str(info.value)

    double.grants.revoke("SELECT", "analytics")
    with pytest.raises(RedshiftStatementError, match="FAILED: ERROR: permission denied for schema analytics"):
        wh.unload(device_gender_training_query(DS), store, "unload/revoked/")
    assert wh.query_value("SELECT has_table_privilege(current_user, 'analytics.devices', 'SELECT')") is False
    assert store.list("unload/revoked/") == []


# --- the Data API's answers, as the clients parse them ------------------------------------


def test_results_are_typed_as_the_data_api_types_them(double) -> None:
    client = boto3.client("redshift-data")
    target = {"WorkgroupName": "analytics", "Database": "dev"}
    sql = "SELECT 7::BIGINT AS n, 1.5::FLOAT8 AS x, TRUE AS b, NULL AS z, 'é' AS s, DATE '2026-11-22' AS d"
    statement_id = client.execute_statement(Sql=sql, **target)["Id"]
    assert _until(statement_id, "FINISHED")["HasResultSet"] is True
    result = client.get_statement_result(Id=statement_id)
    assert result["Records"] == [
        [{"longValue": 7}, {"doubleValue": 1.5}, {"booleanValue": True}, {"isNull": True}]
        + [{"stringValue": "é"}, {"stringValue": "2026-11-22"}]
    ]
    assert [c["name"] for c in result["ColumnMetadata"]] == ["n", "x", "b", "z", "s", "d"]
    assert [c["typeName"] for c in result["ColumnMetadata"]][:3] == ["int8", "float8", "bool"]
    plan_id = client.execute_statement(Sql="EXPLAIN SELECT device_id FROM analytics.devices", **target)["Id"]
    _until(plan_id, "FINISHED")
    plan = client.get_statement_result(Id=plan_id)
    assert plan["ColumnMetadata"][0]["name"] == "QUERY PLAN" and plan["TotalNumRows"] >= 1
    many = client.execute_statement(Sql="SELECT device_id FROM analytics.devices ORDER BY 1 LIMIT 2500", **target)
    _until(many["Id"], "FINISHED")
    pages = [client.get_statement_result(Id=many["Id"])]
    while "NextToken" in pages[-1]:  # the client pages through a large result as with Redshift
        pages.append(client.get_statement_result(Id=many["Id"], NextToken=pages[-1]["NextToken"]))
    assert len(pages) == 3 and sum(len(p["Records"]) for p in pages) == pages[0]["TotalNumRows"] == 2500
    listed = client.list_statements(Status="FINISHED")["Statements"]
    assert {statement_id, plan_id} <= {s["Id"] for s in listed}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_statement(Id="00000000-0000-0000-0000-000000000000")
