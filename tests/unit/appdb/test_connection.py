"""The app DB's Airflow connection: URL, TLS arguments, IAM tokens, and no password in sight."""

import json
import ssl
from urllib.parse import parse_qs, urlsplit

import pytest
from mlbatch.backends.appdb.connection import AppDbConnectionError, IamToken, StaticPassword, from_connection
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.backends.env import Environment

SECRET = "Pw-9c1f7e2a-never-logged"


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    conn = {"conn_type": "mysql", "host": "aurora.example.internal", "port": 3306, "schema": "mlbatch"}
    conn |= {"login": "mlbatch_app", "password": SECRET} | fields
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def test_connection_gives_a_password_free_url_and_the_password_at_connect(monkeypatch):
    set_conn(monkeypatch, "appdb_plain")
    settings = from_connection("appdb_plain")
    assert settings.url.render_as_string(hide_password=False) == (
        "mysql+pymysql://mlbatch_app@aurora.example.internal:3306/mlbatch"
    )
    assert isinstance(settings.password, StaticPassword) and settings.password() == SECRET
    assert settings.connect_args == {"charset": "utf8mb4"}
    hook = AppDbHook.from_settings(settings)
    for text in (repr(hook), hook.url, repr(settings), str(hook.engine.url), repr(hook.engine)):
        assert SECRET not in text, text
    hook.dispose()


def test_environment_prefers_the_connection_over_the_url(monkeypatch, tmp_path):
    set_conn(monkeypatch, "appdb_env")
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path))
    monkeypatch.setenv("MLBATCH_APPDB_URL", "sqlite:///ignored.db")
    monkeypatch.setenv("MLBATCH_APPDB_CONN_ID", "appdb_env")
    env = Environment.from_env()
    assert env.appdb.dialect == "mysql" and "aurora.example.internal" in env.appdb.url
    assert env.describe()["appdb"] == "connection appdb_env"
    monkeypatch.delenv("MLBATCH_APPDB_CONN_ID")
    assert Environment.from_env().appdb.dialect == "sqlite"  # the CLI's fallback


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"ssl_ca": "/etc/rds/global-bundle.pem", "ssl_verify_cert": "true", "ssl_verify_identity": True},
            {"ssl_ca": "/etc/rds/global-bundle.pem", "ssl_verify_cert": True, "ssl_verify_identity": True},
        ),
        (
            {"ssl": json.dumps({"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem", "check_hostname": "false"})},
            {"ssl_ca": "/ca.pem", "ssl_cert": "/c.pem", "ssl_key": "/k.pem", "ssl_verify_identity": False},
        ),
        (
            {"ssl_mode": "verify_identity", "ssl_ca": "/ca.pem"},
            {"ssl_ca": "/ca.pem", "ssl_verify_cert": True, "ssl_verify_identity": True},
        ),
        ({"ssl_mode": "DISABLED"}, {"ssl_disabled": True}),
        ({"charset": "utf8mb4", "ssl_disabled": "no"}, {"ssl_disabled": False}),
    ],
)
def test_tls_extras_become_pymysql_arguments(monkeypatch, extra, expected):
    set_conn(monkeypatch, "appdb_tls", extra=extra)
    assert from_connection("appdb_tls").connect_args == {"charset": "utf8mb4", **expected}


def test_ssl_mode_required_encrypts_without_verifying(monkeypatch):
    set_conn(monkeypatch, "appdb_req", extra={"ssl_mode": "REQUIRED"})
    ctx = from_connection("appdb_req").connect_args["ssl"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"extra": {"ssl_mode": "SOMETIMES"}}, "ssl_mode 'SOMETIMES'"),
        ({"extra": {"ssl": "{not json"}}, "extra ssl is not a JSON object"),
        ({"extra": {"ssl": {"cafile": "/x"}}}, "extra ssl has ['cafile']"),
        ({"schema": None}, "schema missing"),
        ({"conn_type": "oracle"}, "conn_type 'oracle' is not mysql"),
        ({"conn_type": "postgres", "extra": {"sslmode": "sometimes"}}, "sslmode 'sometimes' is not one of"),
        ({"conn_type": "postgres", "extra": {"iam": True, "sslmode": "require"}}, "set extra sslrootcert"),
        ({"extra": {"iam": True}}, "iam=true needs TLS"),
    ],
)
def test_bad_connections_name_the_connection_and_the_field(monkeypatch, fields, words):
    set_conn(monkeypatch, "appdb_bad", **fields)
    with pytest.raises(AppDbConnectionError) as err:
        from_connection("appdb_bad")
    assert "'appdb_bad'" in str(err.value) and words in str(err.value)
    assert SECRET not in str(err.value)


def test_missing_connection_says_how_to_create_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_APPDB_NOWHERE", raising=False)
    with pytest.raises(AppDbConnectionError, match="AIRFLOW_CONN_APPDB_NOWHERE"):
        from_connection("appdb_nowhere")


def test_iam_auth_makes_a_signed_token_from_the_aws_connection(monkeypatch):
    aws = {
        "conn_type": "aws",
        "login": "AKIDIAMTEST",
        "password": "aws-secret-key",
        "extra": {"region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_APPDB", json.dumps(aws))
    set_conn(
        monkeypatch,
        "appdb_iam",
        password=None,
        extra={"iam": "true", "aws_conn_id": "aws_appdb", "ssl_ca": "/etc/rds/global-bundle.pem"},
    )
    settings = from_connection("appdb_iam")
    assert settings.password == IamToken("aurora.example.internal", 3306, "mlbatch_app", "aws_appdb", None)
    token = settings.password()
    # generate_db_auth_token is a presigned rds-db:connect URL without its scheme.
    parts = urlsplit("https://" + token)
    query = parse_qs(parts.query)
    assert parts.netloc == "aurora.example.internal:3306"
    assert query["Action"] == ["connect"] and query["DBUser"] == ["mlbatch_app"]
    assert (
        query["X-Amz-Credential"][0].startswith("AKIDIAMTEST/") and "/eu-west-1/rds-db/" in query["X-Amz-Credential"][0]
    )
    assert "aws-secret-key" not in token and "aws-secret-key" not in repr(settings)


def test_a_postgres_connection_describes_aurora_postgresql(monkeypatch):
    extra = {"sslmode": "verify-full", "sslrootcert": "/etc/rds/global-bundle.pem", "connect_timeout": 5}
    set_conn(monkeypatch, "appdb_pg", conn_type="postgres", port=None, extra=extra)
    settings = from_connection("appdb_pg")
    assert settings.url.render_as_string(hide_password=False) == (
        "postgresql+psycopg2://mlbatch_app@aurora.example.internal:5432/mlbatch"
    )
    assert settings.connect_args == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/rds/global-bundle.pem",
        "connect_timeout": "5",
    }
    hook = AppDbHook.from_settings(settings)
    assert hook.dialect == "postgresql" and SECRET not in repr(hook) + hook.url + str(hook.engine.url)
    # The backend's own argument, then the connection's: both reach psycopg2.
    engine = hook.server_engine()
    assert engine.dialect.driver == "psycopg2"
    hook.dispose()


def test_iam_on_postgres_needs_verified_tls_and_signs_for_port_5432(monkeypatch):
    extra = {"iam": "true", "aws_conn_id": "aws_appdb", "sslmode": "verify-full", "sslrootcert": "/rds.pem"}
    set_conn(monkeypatch, "appdb_pg_iam", conn_type="postgres", port=None, password=None, extra=extra)
    assert from_connection("appdb_pg_iam").password == IamToken(
        "aurora.example.internal", 5432, "mlbatch_app", "aws_appdb", None
    )
