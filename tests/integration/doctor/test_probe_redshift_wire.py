"""The Redshift probes over the HTTP wire: the production RedshiftWarehouse (the provider's hook
from an Airflow connection) against the Redshift Data API double, which runs EXPLAIN on DuckDB and
answers the privilege functions from its grants model. Green when everything is granted; a
revoked CREATE on the export schema and a revoked SELECT each FAIL with the GRANT that fixes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mlbatch.backends.warehouse.redshift import RedshiftWarehouse
from mlbatch.cli.doctor.redshift import check_redshift_access
from mlbatch.spec import load_spec

from devtools.devservers import free_port
from devtools.devservers.aws_wire import AwsEndpoint, aws_environment
from devtools.devservers.redshift_data_double import RedshiftDataDouble
from tests.support.paths import REPO
from tests.support.warehouse import synth_warehouse

CONN = "doctor_redshift"


@pytest.fixture(scope="module")
def aws(tmp_path_factory) -> Iterator[tuple[AwsEndpoint, RedshiftDataDouble]]:
    port = free_port()
    double = RedshiftDataDouble(
        synth_warehouse(tmp_path_factory, n_devices=2_000), s3_endpoint=f"http://127.0.0.1:{port}"
    )
    with AwsEndpoint([double], port=port) as endpoint:
        yield endpoint, double


@pytest.fixture
def wh(aws, monkeypatch) -> Iterator[tuple[RedshiftWarehouse, RedshiftDataDouble]]:
    endpoint, double = aws
    for key, value in aws_environment(endpoint.endpoint).items():
        monkeypatch.setenv(key, value)
    extra = {
        "endpoint_url": endpoint.endpoint,
        "region_name": "us-east-1",
        "cluster_identifier": "analytics",
        "database": "dev",
        "db_user": "mlbatch",
        "iam_role": "arn:aws:iam::123456789012:role/mlbatch-redshift",
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps({"conn_type": "aws", "extra": extra}))
    double.grants.reset()
    warehouse = RedshiftWarehouse.from_url(f"redshift://{CONN}")
    warehouse.poll_interval = 0.1
    yield warehouse, double
    double.wait_idle()
    assert double.invalid == []


@pytest.fixture(scope="module")
def specs():
    return [load_spec(REPO / "dags" / "specs" / "device_gender.yaml")]


def by_boundary(checks):
    return {c.boundary: c for c in checks}


def test_green_when_everything_is_granted(wh, specs):
    warehouse, double = wh
    checks = by_boundary(check_redshift_access(warehouse, specs, "2026-11-22"))
    assert {n: c.status for n, c in checks.items()} == {
        "SQL device_gender training": "ok",
        "SQL device_gender scoring": "ok",
        "Redshift analytics": "ok",
        "Redshift ml_exports": "ok",
    }, checks


def test_revoked_create_on_the_export_schema(wh, specs):
    warehouse, double = wh
    # As docs/deploy.md has the admin do it: the schema exists and the grant on it is what counts
    # (the double models schema privileges, not the database's CREATE a missing schema needs).
    warehouse.run("CREATE SCHEMA IF NOT EXISTS ml_exports")
    double.grants.revoke("CREATE", "ml_exports")
    check = by_boundary(check_redshift_access(warehouse, specs, "2026-11-22"))["Redshift ml_exports"]
    assert check.status == "FAIL", check
    assert "may not CREATE in schema ml_exports" in check.detail
    assert check.fix == "GRANT USAGE, CREATE ON SCHEMA ml_exports TO mlbatch"


def test_revoked_select_fails_explain_and_names_the_grant(wh, specs):
    warehouse, double = wh
    double.grants.revoke("SELECT", "analytics", "devices")
    checks = by_boundary(check_redshift_access(warehouse, specs, "2026-11-22"))
    assert checks["SQL device_gender training"].status == "FAIL"
    assert "permission denied" in checks["SQL device_gender training"].detail
    assert checks["Redshift analytics"].fix == "GRANT SELECT ON analytics.devices TO mlbatch"
