"""RedshiftWarehouse without a Data API: statement text, configuration, the trigger it hands over.

Everything that talks to the Data API (polling, failures, batches as transactions, bound
parameters, cancel, the trigger's wait and on_kill) runs over the HTTP wire against a double
that executes the statements: tests/integration/features/test_redshift_wire.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from mlbatch.backends.env import Environment
from mlbatch.backends.warehouse.redshift import (
    RedshiftConfig,
    RedshiftStatementError,
    RedshiftWarehouse,
    _statement_error,
    replace_day_statements,
)

ROLE = "arn:aws:iam::123456789012:role/mlbatch-redshift"
CONFIG = RedshiftConfig(database="dev", iam_role=ROLE, cluster_identifier="analytics", db_user="mlbatch")


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
    with pytest.raises(ValueError, match="quotes are not allowed"):
        replace_day_statements("ml_exports.t", "2026-11-22", "s3://b/x'/", ROLE)


def test_table_names_are_validated_before_anything_is_sent() -> None:
    wh = RedshiftWarehouse("redshift_default", config=CONFIG)  # no hook: nothing may reach one
    for call in (lambda: wh.count_day("ml_exports.x; DROP TABLE y", "2026-11-22"), lambda: wh.latest_day("T")):
        with pytest.raises(ValueError, match="schema.table"):
            call()


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


def test_the_deferred_wait_is_the_provider_trigger_which_cancels_on_kill() -> None:
    from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger

    wh = RedshiftWarehouse("redshift_default", config=CONFIG, poll_interval=0.2)
    trigger = wh.trigger("st-unload")
    assert isinstance(trigger, RedshiftDataTrigger)
    classpath, kwargs = trigger.serialize()  # what the triggerer process rebuilds it from
    assert classpath == "airflow.providers.amazon.aws.triggers.redshift_data.RedshiftDataTrigger"
    assert kwargs["statement_id"] == "st-unload" and kwargs["aws_conn_id"] == "redshift_default"
    assert kwargs["cancel_on_kill"] is True and kwargs["poll_interval"] == 1  # whole seconds, at least 1


def _describing(answer: Any) -> RedshiftWarehouse:
    def describe_statement(**_: Any) -> dict[str, Any]:
        if isinstance(answer, Exception):
            raise answer
        return answer

    hook: Any = SimpleNamespace(conn=SimpleNamespace(describe_statement=describe_statement))
    return RedshiftWarehouse("redshift_default", config=CONFIG, hook=hook)


def test_a_failed_trigger_event_raises_with_redshift_s_error() -> None:
    wh = _describing(RuntimeError("must not be called for a success"))
    wh.check_event(None, "UNLOAD")
    wh.check_event({"status": "success", "statement_id": "st-3"}, "UNLOAD")
    event = {"status": "error", "statement_id": "st-3", "type": "FAILED", "message": "Statement st-3 ... {dump}"}
    described = _describing({"Id": "st-3", "Status": "FAILED", "Error": "ERROR: S3 access denied"})
    with pytest.raises(RedshiftStatementError, match="st-3 FAILED: ERROR: S3 access denied"):
        described.check_event(event, "UNLOAD")
    # The trigger's own polling failed (its event reads the same), the statement did not: no error.
    _describing({"Id": "st-3", "Status": "FINISHED"}).check_event({**event, "message": "Connect timeout"}, "UNLOAD")
    # The describe failing too: the event still names the statement and how it ended.
    with pytest.raises(RedshiftStatementError, match=r"st-3 FAILED: Statement st-3 \.\.\. \{dump\}"):
        _describing(ConnectionError("endpoint unreachable")).check_event(event, "UNLOAD")


def test_a_batch_s_error_is_said_once() -> None:
    desc = {
        "Error": "ERROR: permission denied for schema ml_exports",
        "SubStatements": [
            {"Status": "FINISHED"},
            {"Status": "FAILED", "Error": "ERROR: permission denied for schema ml_exports"},
            {"Status": "ABORTED"},
        ],
    }
    assert _statement_error(desc) == "ERROR: permission denied for schema ml_exports"
    assert _statement_error({"Status": "ABORTED"}) == ""
