"""`mlbatch doctor` on the test stack (MariaDB; S3 and IAM's policy simulator on one AwsEndpoint)
and with one boundary broken at a time: exit 1, and the FAIL line names the boundary and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import duckdb
import pytest
from sqlalchemy import create_engine, text

from devtools.devservers import MariaDB, start_mariadb
from devtools.devservers.aws_wire import AwsEndpoint
from devtools.devservers.iam_double import iam_query_handlers
from tests.integration.doctor.deploy_docs import worker_policy
from tests.support.paths import REPO

MLBATCH = Path(sys.executable).parent / "mlbatch"
BUCKET = "mlbatch-doctor"
WORKER = "arn:aws:iam::123456789012:role/airflow/mlbatch-worker"
RUN_PREFIXES = ("labels/", "unload/", "models/", "predictions/", "runs/", "export/", "costs/")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """S3 and IAM (its policy simulator too) on one endpoint; the workers' role holds the policy
    docs/deploy.md gives, so the doctor's IAM line is green as a deployment following it would be."""
    with AwsEndpoint([], query_handlers=iam_query_handlers()) as endpoint:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
        )
        iam.create_role(RoleName="mlbatch-worker", Path="/airflow/", AssumeRolePolicyDocument="{}")
        policy = worker_policy(
            account="123456789012",
            region="us-east-1",
            cluster="mlbatch",
            bucket=BUCKET,
            root="mlbatch",
            worker_role="airflow/mlbatch-worker",
        )
        iam.put_role_policy(RoleName="mlbatch-worker", PolicyName="workers", PolicyDocument=json.dumps(policy))
        yield endpoint.endpoint


@pytest.fixture(scope="module")
def bucket(s3_endpoint) -> str:
    client = boto3.client(
        "s3",
        **{"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # noqa: S106
    client.create_bucket(Bucket=BUCKET)
    return BUCKET


def doctor(tmp_path: Path, **env: str) -> tuple[int, dict, str]:
    """Run `mlbatch doctor --json` as a user would, with only the given MLBATCH_/AIRFLOW settings."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    duckdb.connect(str(home / "warehouse.duckdb")).close()  # an embedded warehouse that answers
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "MLBATCH_", "AWS_"))}
    base |= {
        "AIRFLOW_HOME": str(REPO),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",  # no tables: pool "warn"
        "MLBATCH_HOME": str(home),
    }
    proc = subprocess.run(
        [str(MLBATCH), "doctor", "--json"], env=base | env, capture_output=True, text=True, timeout=300
    )
    try:
        # Airflow's own log lines (e.g. the AWS connection's) also go to stdout: the report starts at "{".
        report = json.loads(proc.stdout[proc.stdout.index("\n{") :] if "\n{" in proc.stdout else proc.stdout)
    except ValueError:
        raise AssertionError(
            f"doctor printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None
    return proc.returncode, {c["boundary"]: c for c in report["checks"]}, proc.stdout + proc.stderr


def stack_env(s3_endpoint: str, bucket: str, appdb_url: str) -> dict[str, str]:
    """The test stack with every credential from an Airflow connection (AIRFLOW_CONN_* JSON)."""
    url = appdb_url.removeprefix("mysql+pymysql://")
    login, rest = url.split("@", 1)
    user, password = login.split(":", 1)
    hostport, schema = rest.split("/", 1)
    host, port = hostport.split(":")
    appdb = {
        "conn_type": "mysql",
        "host": host,
        "port": int(port),
        "schema": schema,
        "login": user,
        "password": password,
    }
    aws = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": s3_endpoint},
    }
    return {
        "AIRFLOW_CONN_MLBATCH_APPDB": json.dumps(appdb),
        "AIRFLOW_CONN_AWS_TEST": json.dumps(aws),
        "MLBATCH_APPDB_CONN_ID": "mlbatch_appdb",
        "MLBATCH_AWS_CONN_ID": "aws_test",
        "MLBATCH_OBJECT_STORE": f"s3://{bucket}/mlbatch",
        "MLBATCH_DOCTOR_PRINCIPAL_ARN": WORKER,
    }


def statuses(checks: dict) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


def test_green_on_the_test_stack_with_credentials_from_connections(tmp_path, s3_endpoint, bucket, mariadb_url):
    code, checks, output = doctor(tmp_path, **stack_env(s3_endpoint, bucket, mariadb_url))
    assert code == 0, output
    assert statuses(checks) == {
        "connections": "ok",
        "warehouse": "ok",
        "object store": "ok",
        **{f"S3 {prefix}": "ok" for prefix in RUN_PREFIXES},
        "app DB": "ok",
        "app DB grants": "ok",
        "app DB load": "ok",
        "ECS": "skip",
        "S3 IAM": "ok",
        "label sheet": "skip",
        # No metadata DB tables here: the pools cannot be checked (warn, not FAIL).
        "GPU pool": "warn",
        "pool warehouse": "warn",
        "pool appdb": "warn",
        "pool heavy": "warn",
    }, output
    assert "mlbatch_appdb" in checks["connections"]["detail"] and "aws_test" in checks["connections"]["detail"]
    # The probe objects were deleted again, and nothing else was left.
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # noqa: S106
    assert s3.list_objects_v2(Bucket=bucket, Prefix="mlbatch/").get("KeyCount", 0) == 0


def test_wrong_aurora_password(tmp_path, s3_endpoint, bucket, mariadb_url):
    env = stack_env(s3_endpoint, bucket, mariadb_url)
    conn = json.loads(env["AIRFLOW_CONN_MLBATCH_APPDB"]) | {"password": "Wr0ng-pw-7d1e"}
    code, checks, output = doctor(tmp_path, **env | {"AIRFLOW_CONN_MLBATCH_APPDB": json.dumps(conn)})
    assert code == 1
    failed = {n for n, s in statuses(checks).items() if s == "FAIL"}
    assert failed == {"app DB"}, output
    assert "Access denied" in checks["app DB"]["detail"] and "password" in checks["app DB"]["fix"]
    assert "connection mlbatch_appdb" in checks["app DB"]["fix"]
    assert "Wr0ng-pw-7d1e" not in output


def test_unwritable_bucket(tmp_path, s3_endpoint, bucket, mariadb_url):
    env = stack_env(s3_endpoint, bucket, mariadb_url) | {"MLBATCH_OBJECT_STORE": "s3://no-such-bucket-here/mlbatch"}
    code, checks, output = doctor(tmp_path, **env)
    assert code == 1
    # The IAM line fails too: the workers' policy names the configured bucket, not this one.
    failed = {n for n, s in statuses(checks).items() if s == "FAIL"}
    assert failed == {"object store", "S3 IAM"}, output  # one line for the bucket, not one per prefix
    assert "cannot list s3://no-such-bucket-here/mlbatch" in checks["object store"]["detail"]
    assert "create the bucket" in checks["object store"]["fix"]


@pytest.fixture
def infile_off_mariadb(tmp_path_factory) -> MariaDB:
    """A MariaDB of this test's own: SET GLOBAL must not leak into the shared server."""
    server = start_mariadb(tmp_path_factory.mktemp("mariadb-infile-off"))
    admin = create_engine(server.url)
    with admin.begin() as conn:
        conn.execute(text("SET GLOBAL local_infile = 0"))
    admin.dispose()
    yield server
    server.stop()


def test_local_infile_off(tmp_path, s3_endpoint, bucket, infile_off_mariadb):
    code, checks, output = doctor(tmp_path, **stack_env(s3_endpoint, bucket, infile_off_mariadb.url))
    assert code == 1
    assert {n for n, s in statuses(checks).items() if s == "FAIL"} == {"app DB load"}, output
    assert (
        "local_infile is OFF" in checks["app DB load"]["detail"]
        or "local_infile is 0" in checks["app DB load"]["detail"]
    )
    assert "local_infile=1" in checks["app DB load"]["fix"]


def test_missing_privileges(tmp_path, s3_endpoint, bucket, mariadb, mariadb_url):
    database = mariadb_url.rsplit("/", 1)[1]
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text("CREATE USER 'doctor_ro'@'127.0.0.1' IDENTIFIED BY 'ro-pass-1'"))
        conn.execute(text(f"GRANT SELECT, INSERT ON `{database}`.* TO 'doctor_ro'@'127.0.0.1'"))
    try:
        url = f"mysql+pymysql://doctor_ro:ro-pass-1@127.0.0.1:{mariadb.port}/{database}"
        code, checks, output = doctor(tmp_path, **stack_env(s3_endpoint, bucket, url))
    finally:
        with admin.begin() as conn:
            conn.execute(text("DROP USER 'doctor_ro'@'127.0.0.1'"))
        admin.dispose()
    assert code == 1
    assert {n for n, s in statuses(checks).items() if s == "FAIL"} == {"app DB grants"}, output
    assert checks["app DB grants"]["fix"].startswith(
        f"GRANT UPDATE, DELETE, CREATE, DROP, ALTER, INDEX ON `{database}`.*"
    )
