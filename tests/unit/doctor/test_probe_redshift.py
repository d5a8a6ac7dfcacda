"""The Redshift probes through the production RedshiftWarehouse (Data API client calls validated
against botocore's model): EXPLAIN of each rendered query, SELECT on the tables they read, CREATE
on the export schema; each fault FAILs with the GRANT that fixes it.

The Data API here is a test-local stand-in with a grants model, fast and without servers; the
same probes run against the Redshift Data API double over the wire in
tests/integration/doctor/test_probe_redshift_wire.py. The stand-in keeps the cases the double
does not model: CREATE on the database while the export schema does not exist, IAMR: users.
"""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook
from botocore.validate import validate_parameters
from mlbatch.backends.env import Environment
from mlbatch.backends.warehouse.redshift import RedshiftConfig, RedshiftWarehouse
from mlbatch.cli import doctor
from mlbatch.cli.doctor.redshift import check_redshift_access, source_tables
from mlbatch.spec import load_spec

from tests.support.paths import REPO

ROLE = "arn:aws:iam::123456789012:role/mlbatch-redshift"
MODEL = botocore.session.get_session().get_service_model("redshift-data")
TABLES = {("analytics", "devices"), ("analytics", "recipes")}


class DataApiStandIn:
    """A redshift-data client answering from a grants model: everything granted until revoked."""

    def __init__(self, user: str = "mlbatch") -> None:
        self.user = user
        self.revoked: set[tuple[str, str, str | None]] = set()  # (privilege, schema, table)
        self.schemas = {"analytics", "ml_exports"}
        self.statements: dict[str, dict[str, Any]] = {}
        self.sql: list[str] = []

    def _validated(self, operation: str, params: dict[str, Any]) -> None:
        validate_parameters(params, MODEL.operation_model(operation).input_shape)

    def execute_statement(self, **params: Any) -> dict[str, Any]:
        self._validated("ExecuteStatement", params)
        bound = {p["name"]: p["value"] for p in params.get("Parameters", [])}
        sid = str(uuid.uuid4())
        self.sql.append(params["Sql"])
        try:
            self.statements[sid] = {"Status": "FINISHED", "Records": self._answer(params["Sql"], bound)}
        except PermissionError as exc:
            self.statements[sid] = {"Status": "FAILED", "Error": f"ERROR: {exc}"}
        return {"Id": sid}

    def describe_statement(self, **params: Any) -> dict[str, Any]:
        self._validated("DescribeStatement", params)
        st = self.statements[params["Id"]]
        return {"Id": params["Id"], "Status": st["Status"], **({"Error": st["Error"]} if "Error" in st else {})}

    def get_statement_result(self, **params: Any) -> dict[str, Any]:
        self._validated("GetStatementResult", params)
        return {"Records": self.statements[params["Id"]]["Records"]}

    def _allowed(self, privilege: str, schema: str, table: str | None = None) -> bool:
        return (privilege, schema, table) not in self.revoked and (privilege, schema, None) not in self.revoked

    def _answer(self, sql: str, bound: dict[str, str]) -> list[list[dict[str, Any]]]:
        if sql.startswith("EXPLAIN "):
            for schema, table in source_tables(sql.removeprefix("EXPLAIN ")):
                if not self._allowed("USAGE", schema):
                    raise PermissionError(f"permission denied for schema {schema}")
                if not self._allowed("SELECT", schema, table):
                    raise PermissionError(f"permission denied for relation {table}")
            return [[{"stringValue": "XN Seq Scan on devices d  (cost=0.00..1.00 rows=100 width=8)"}]]
        if sql == "SELECT current_user":
            return [[{"stringValue": self.user}]]
        m = re.fullmatch(r"SELECT has_(schema|table)_privilege\(current_user, :(schema|table), '(\w+)'\)", sql)
        if m:
            schema, _, table = bound[m.group(2)].partition(".")
            return [[{"booleanValue": self._allowed(m.group(3), schema, table or None)}]]
        if "pg_namespace" in sql:
            return [[{"longValue": int(bound["schema"] in self.schemas)}]]
        if "has_database_privilege" in sql:
            return [[{"booleanValue": self._allowed("CREATE", "<database>")}]]
        raise AssertionError(f"the stand-in does not answer {sql!r}")


@pytest.fixture
def data_api() -> DataApiStandIn:
    return DataApiStandIn()


@pytest.fixture
def wh(data_api) -> RedshiftWarehouse:
    hook = RedshiftDataHook(aws_conn_id=None)
    hook.conn = data_api
    config = RedshiftConfig(database="dev", iam_role=ROLE, cluster_identifier="analytics", db_user="mlbatch")
    return RedshiftWarehouse("redshift_default", config=config, hook=hook, poll_interval=0)


@pytest.fixture(scope="module")
def specs():
    return [load_spec(REPO / "dags" / "specs" / f"{m}.yaml") for m in ("device_gender", "recipe_category")]


def by_boundary(checks) -> dict[str, Any]:
    return {c.boundary: c for c in checks}


def test_source_tables_skip_ctes_and_default_to_public():
    query = "WITH recent AS (SELECT * FROM analytics.devices) SELECT * FROM recent JOIN dims d ON true"
    assert source_tables(query) == {("analytics", "devices"), ("public", "dims")}


def test_healthy_warehouse_passes_every_probe(wh, data_api, specs):
    checks = by_boundary(check_redshift_access(wh, specs, "2026-11-22"))
    assert {name: c.status for name, c in checks.items()} == {
        "SQL device_gender training": "ok",
        "SQL device_gender scoring": "ok",
        "SQL recipe_category training": "ok",
        "SQL recipe_category scoring": "ok",
        "Redshift analytics": "ok",
        "Redshift ml_exports": "ok",
    }
    explains = [s for s in data_api.sql if s.startswith("EXPLAIN")]
    assert len(explains) == 4 and all("'2026-11-22'" in s for s in explains)
    assert "analytics.devices" in explains[0] and "--" not in explains[0]  # rendered, comments stripped


def test_missing_create_on_the_export_schema_names_the_grant(wh, data_api, specs):
    data_api.revoked.add(("CREATE", "ml_exports", None))
    check = by_boundary(check_redshift_access(wh, specs))["Redshift ml_exports"]
    assert check.status == "FAIL" and "may not CREATE in schema ml_exports" in check.detail
    assert check.fix == "GRANT USAGE, CREATE ON SCHEMA ml_exports TO mlbatch"


def test_missing_export_schema_needs_create_on_the_database(wh, data_api, specs):
    data_api.schemas.discard("ml_exports")
    data_api.revoked.add(("CREATE", "<database>", None))
    check = by_boundary(check_redshift_access(wh, specs))["Redshift ml_exports"]
    assert check.status == "FAIL" and check.fix.startswith("CREATE SCHEMA ml_exports; GRANT USAGE, CREATE")


def test_missing_select_fails_explain_and_names_the_grant(wh, data_api, specs):
    data_api.revoked.add(("SELECT", "analytics", "devices"))
    checks = by_boundary(check_redshift_access(wh, specs))
    assert checks["SQL device_gender training"].status == "FAIL"
    assert "permission denied for relation devices" in checks["SQL device_gender training"].detail
    assert checks["SQL recipe_category training"].status == "ok"
    assert checks["Redshift analytics"].status == "FAIL"
    assert checks["Redshift analytics"].fix == "GRANT SELECT ON analytics.devices TO mlbatch"


def test_missing_usage_on_a_source_schema(wh, data_api, specs):
    data_api.user = "IAMR:mlbatch-worker"
    data_api.revoked.add(("USAGE", "analytics", None))
    check = by_boundary(check_redshift_access(wh, specs))["Redshift analytics"]
    assert check.status == "FAIL"
    assert check.fix.startswith('GRANT USAGE ON SCHEMA analytics TO "IAMR:mlbatch-worker"')


def test_the_warehouse_check_runs_the_probes(wh, data_api, specs, monkeypatch):
    monkeypatch.setenv("MLBATCH_WAREHOUSE", "redshift://redshift_default")
    env = Environment.from_env()
    data_api.statements.clear()
    env.__dict__["warehouse"] = wh  # the cached_property's slot: the stand-in instead of a real connection
    attached = {"Clusters": [{"IamRoles": [{"IamRoleArn": ROLE, "ApplyStatus": "in-sync"}]}]}
    redshift = SimpleNamespace(describe_clusters=lambda **kw: attached)
    original = data_api._answer
    data_api._answer = lambda sql, bound: [[{"longValue": 1}]] if sql == "select 1" else original(sql, bound)
    names = [c.boundary for c in doctor.check_warehouse(env, redshift, specs)]
    assert names[:2] == ["warehouse", "warehouse role"] and "Redshift ml_exports" in names
