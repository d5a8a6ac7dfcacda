"""RedshiftWarehouse at the boto3 boundary: the Data API client the hook creates, stubbed.

What is asserted is what Redshift would receive (exact SQL, parameters, the batch that makes a
transaction) and how the warehouse reacts to what the Data API answers (polling, failures).
The S3 side (UNLOAD's manifest, COPY's folder) is in tests/integration/features/test_s3.py.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook
from botocore.stub import ANY, Stubber
from mlbatch.env import Environment
from mlbatch.warehouse.redshift import (
    RedshiftConfig,
    RedshiftStatementError,
    RedshiftWarehouse,
    replace_day_statements,
)

ROLE = "arn:aws:iam::123456789012:role/mlbatch-redshift"
TARGET = {"ClusterIdentifier": "analytics", "Database": "dev", "DbUser": "mlbatch"}


@pytest.fixture
def stubbed() -> tuple[RedshiftWarehouse, Stubber]:
    client = boto3.client("redshift-data", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    hook = RedshiftDataHook(aws_conn_id=None)
    hook.conn = client  # the client the hook would create, with a stubber on it
    config = RedshiftConfig(database="dev", iam_role=ROLE, cluster_identifier="analytics", db_user="mlbatch")
    wh = RedshiftWarehouse("redshift_default", config=config, hook=hook, poll_interval=0)
    with Stubber(client) as stubber:
        yield wh, stubber
        stubber.assert_no_pending_responses()


def _submit(stubber: Stubber, op: str, sql_field: str, sql: Any, statement_id: str, **extra: Any) -> None:
    stubber.add_response(op, {"Id": statement_id}, {sql_field: sql, **TARGET, "WithEvent": False, **extra})


def _states(stubber: Stubber, statement_id: str, *states: str, **final: Any) -> None:
    for n, state in enumerate(states):
        body = {"Id": statement_id, "Status": state, **(final if n == len(states) - 1 else {})}
        stubber.add_response("describe_statement", body, {"Id": statement_id})


def _value(stubber: Stubber, statement_id: str, field: dict[str, Any]) -> None:
    stubber.add_response("get_statement_result", {"Records": [[field]]}, {"Id": statement_id})


def test_statement_is_polled_until_finished(stubbed) -> None:
    wh, stubber = stubbed
    _submit(stubber, "execute_statement", "Sql", "SELECT 1", "st-1")
    _states(stubber, "st-1", "SUBMITTED", "PICKED", "STARTED", "FINISHED")
    assert wh.run("SELECT 1") == "st-1"


def test_failed_statement_raises_with_redshift_error_and_id(stubbed) -> None:
    wh, stubber = stubbed
    _submit(stubber, "execute_statement", "Sql", "SELECT * FROM analytics.devices", "st-9")
    _states(stubber, "st-9", "STARTED", "FAILED", Error='ERROR: permission denied for relation "devices"')
    with pytest.raises(RedshiftStatementError, match=r'st-9 FAILED: ERROR: permission denied for relation "devices"'):
        wh.run("SELECT * FROM analytics.devices")


def test_aborted_batch_names_the_failing_sub_statement(stubbed) -> None:
    wh, stubber = stubbed
    _submit(stubber, "batch_execute_statement", "Sqls", ["DELETE FROM s.t", "COPY s.t"], "b-1")
    sub = [{"Id": "b-1:1", "Status": "FINISHED"}, {"Id": "b-1:2", "Status": "FAILED", "Error": "S3 access denied"}]
    _states(stubber, "b-1", "STARTED", "ABORTED", SubStatements=sub)
    with pytest.raises(RedshiftStatementError, match="b-1 ABORTED: S3 access denied") as info:
        wh.run(["DELETE FROM s.t", "COPY s.t"])
    assert info.value.statement_id == "b-1"


def test_count_and_latest_day_bind_their_values(stubbed) -> None:
    wh, stubber = stubbed
    has_table = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = :schema AND table_name = :name"
    table_params = [{"name": "schema", "value": "ml_exports"}, {"name": "name", "value": "device_gender_predictions"}]
    _submit(stubber, "execute_statement", "Sql", has_table, "t-1", Parameters=table_params)
    _states(stubber, "t-1", "FINISHED")
    _value(stubber, "t-1", {"longValue": 1})
    _submit(
        stubber,
        "execute_statement",
        "Sql",
        "SELECT COUNT(*) FROM ml_exports.device_gender_predictions WHERE ds = CAST(:ds AS DATE)",
        "c-1",
        Parameters=[{"name": "ds", "value": "2026-11-22"}],
    )
    _states(stubber, "c-1", "FINISHED")
    _value(stubber, "c-1", {"longValue": 161244})
    assert wh.count_day("ml_exports.device_gender_predictions", "2026-11-22") == 161244

    _submit(stubber, "execute_statement", "Sql", has_table, "t-2", Parameters=table_params)
    _states(stubber, "t-2", "FINISHED")
    _value(stubber, "t-2", {"longValue": 1})
    _submit(
        stubber,
        "execute_statement",
        "Sql",
        "SELECT CAST(MAX(ds) AS VARCHAR) FROM ml_exports.device_gender_predictions",
        "m-1",
    )
    _states(stubber, "m-1", "FINISHED")
    _value(stubber, "m-1", {"stringValue": "2026-11-22"})
    assert wh.latest_day("ml_exports.device_gender_predictions") == "2026-11-22"


def test_missing_table_counts_zero(stubbed) -> None:
    wh, stubber = stubbed
    _submit(stubber, "execute_statement", "Sql", ANY, "t-1", Parameters=ANY)
    _states(stubber, "t-1", "FINISHED")
    _value(stubber, "t-1", {"longValue": 0})
    assert wh.count_day("ml_exports.device_gender_predictions", "2026-11-22") == 0


def test_table_names_are_validated_before_anything_is_sent(stubbed) -> None:
    wh, _ = stubbed
    with pytest.raises(ValueError, match="schema.table"):
        wh.count_day("ml_exports.x; DROP TABLE y", "2026-11-22")


def test_replace_day_statements_are_golden() -> None:
    sqls = replace_day_statements(
        "ml_exports.device_gender_predictions", "2026-11-22", "s3://b/export/device_gender/2026-11-22/", ROLE
    )
    assert sqls == [
        "CREATE SCHEMA IF NOT EXISTS ml_exports",
        "CREATE TABLE IF NOT EXISTS ml_exports.device_gender_predictions (entity_key BIGINT NOT NULL, "
        "ds DATE NOT NULL, model_version VARCHAR(64) NOT NULL, label VARCHAR(256) NOT NULL, "
        "score DOUBLE PRECISION NOT NULL)",
        "DELETE FROM ml_exports.device_gender_predictions WHERE ds = '2026-11-22'",
        "COPY ml_exports.device_gender_predictions FROM 's3://b/export/device_gender/2026-11-22/' "
        f"IAM_ROLE '{ROLE}' FORMAT AS PARQUET",
    ]
    with pytest.raises(ValueError, match="Invalid isoformat"):
        replace_day_statements("ml_exports.t", "2026-11-22' OR '1'='1", "s3://b/x/", ROLE)


def test_config_from_connection_extras_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"workgroup_name": "wg", "database": "dev", "iam_role": ROLE}
    monkeypatch.setenv("AIRFLOW_CONN_RS_TEST", json.dumps({"conn_type": "aws", "extra": extra}))
    monkeypatch.setenv("MLBATCH_WAREHOUSE", "redshift://rs_test")
    monkeypatch.setenv("MLBATCH_REDSHIFT_DATABASE", "analytics")  # the environment wins
    wh = Environment.from_env().warehouse
    assert isinstance(wh, RedshiftWarehouse) and wh.conn_id == "rs_test"
    assert wh.config == RedshiftConfig(database="analytics", iam_role=ROLE, workgroup_name="wg")
    monkeypatch.setenv("MLBATCH_REDSHIFT_CLUSTER", "analytics")
    with pytest.raises(ValueError, match="exactly one of cluster_identifier"):
        _ = RedshiftWarehouse("rs_test").config
    monkeypatch.delenv("MLBATCH_REDSHIFT_CLUSTER")
    monkeypatch.setenv("AIRFLOW_CONN_RS_TEST", json.dumps({"conn_type": "aws", "extra": {"workgroup_name": "wg"}}))
    monkeypatch.delenv("MLBATCH_REDSHIFT_IAM_ROLE", raising=False)
    with pytest.raises(ValueError, match=r"missing iam_role \(MLBATCH_REDSHIFT_IAM_ROLE\)"):
        _ = RedshiftWarehouse("rs_test").config
    with pytest.raises(ValueError, match="redshift://<airflow_conn_id>"):
        RedshiftWarehouse.from_url("redshift://")


# --- stopping: the statement is cancelled, in the worker and in the triggerer ----------------------
def test_cancel_sends_cancel_statement(stubbed) -> None:
    wh, stubber = stubbed
    _submit(stubber, "execute_statement", "Sql", "UNLOAD ('SELECT 1')", "st-unload")
    stubber.add_response("cancel_statement", {"Status": True}, {"Id": "st-unload"})
    statement_id = wh.submit("UNLOAD ('SELECT 1')")
    wh.cancel(statement_id)  # on_kill while the worker waits


def test_interrupted_wait_cancels_the_statement(stubbed, monkeypatch) -> None:
    wh, stubber = stubbed
    _submit(stubber, "execute_statement", "Sql", "SELECT 1", "st-2")
    _states(stubber, "st-2", "STARTED")
    stubber.add_response("cancel_statement", {"Status": True}, {"Id": "st-2"})

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("mlbatch.warehouse.redshift.time.sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        wh.run("SELECT 1")


def test_a_cancel_of_a_finished_statement_is_logged_not_raised(stubbed) -> None:
    wh, stubber = stubbed
    stubber.add_client_error(
        "cancel_statement", "ValidationException", "Could not cancel a query that is already in FINISHED state."
    )
    wh.cancel("st-done")


class FakeAsyncRedshiftData:
    """The aiobotocore Data API client of the provider's trigger; requests validated by botocore."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __aenter__(self) -> FakeAsyncRedshiftData:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def cancel_statement(self, **kw: Any) -> dict[str, Any]:
        import botocore.session
        from botocore.validate import validate_parameters

        model = botocore.session.get_session().get_service_model("redshift-data")
        validate_parameters(kw, model.operation_model("CancelStatement").input_shape)
        self.calls.append(("CancelStatement", kw))
        return {"Status": True}


def test_deferred_wait_uses_the_provider_trigger_which_cancels_on_kill(stubbed, monkeypatch) -> None:
    import asyncio

    from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger

    wh, _ = stubbed
    trigger = wh.trigger("st-unload")
    assert isinstance(trigger, RedshiftDataTrigger)
    assert trigger.statement_id == "st-unload" and trigger.cancel_on_kill is True
    assert trigger.aws_conn_id == "redshift_default"
    client = FakeAsyncRedshiftData()

    async def conn(self: Any) -> FakeAsyncRedshiftData:
        return client

    monkeypatch.setattr(RedshiftDataHook, "get_async_conn", conn)
    asyncio.run(trigger.on_kill())  # what the triggerer runs when a person marks the task failed
    assert client.calls == [("CancelStatement", {"Id": "st-unload"})]


def test_a_failed_trigger_event_raises_with_redshift_s_error() -> None:
    RedshiftWarehouse.check_event({"status": "success", "statement_id": "st-3"}, "UNLOAD")
    with pytest.raises(RedshiftStatementError, match="st-3 ERROR: S3 access denied"):
        RedshiftWarehouse.check_event(
            {"status": "error", "statement_id": "st-3", "message": "S3 access denied"}, "UNLOAD"
        )


def test_a_retry_asks_whether_the_earlier_statement_still_runs(stubbed) -> None:
    wh, stubber = stubbed
    _states(stubber, "st-old", "STARTED")
    _states(stubber, "st-older", "ABORTED")
    assert wh.is_running("st-old") is True  # its worker died: wait for it, do not submit again
    assert wh.is_running("st-older") is False  # cancelled by on_kill: start fresh
