"""RedshiftWarehouse at the boto3 boundary: the Data API client the hook creates, stubbed.

What is asserted is what Redshift would receive (exact SQL, parameters, the batch that makes a
transaction) and how the warehouse reacts to what the Data API answers (polling, failures).
The S3 side (UNLOAD's manifest, COPY's folder) is in tests/integration/test_features_redshift.py.
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
