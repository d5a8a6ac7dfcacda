"""What the publish's load sessions may do, and nothing else may (MariaDB 10.11 for Aurora).

- ``local_infile``: only the publish's sessions let the server read client files; every other
  app DB session is refused ``LOAD DATA LOCAL INFILE``.
- Aurora MySQL 3 grants ``LOAD DATA FROM S3`` (``AWS_LOAD_S3_ACCESS``) through a role that is
  not active in a session by default. The FROM S3 double (:func:`tests.support.publish.aurora_env`)
  has the server read the object with ``LOAD DATA INFILE``, which needs the FILE privilege: here
  a user holds FILE only through a role that is not its default role, as Aurora's users hold the
  load privilege, so the load fails until the session runs ``SET ROLE``.
"""

from __future__ import annotations

import dataclasses
import uuid

import boto3
import pytest
from mlbatch.backends.appdb.connection import LOAD_ROLE_ENV, settings_for
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.backends.appdb.publisher import PublishError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from devtools.devservers.aurora_proxy import AuroraS3Proxy
from tests.support.publish import (
    MODEL,
    aurora_env,
    fabricate,
    log_rows,
    make_env,
    run_day,
    table_rows,
    tables,
    write_spec,
)

# LOAD DATA LOCAL INFILE and LOAD DATA FROM S3 are MySQL's.
pytestmark = pytest.mark.appdb("mariadb")


LOCAL_INFILE_REFUSED = {1148, 4166}  # MySQL's and MariaDB's "not allowed with this version"


def test_only_the_publish_sessions_may_load_client_files(env, spec, tmp_path):
    source = tmp_path / "rows.tsv"
    source.write_text("1\n2\n")
    with env.appdb.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE side_table (a INT)")
        with pytest.raises(OperationalError) as refused:
            conn.exec_driver_sql("LOAD DATA LOCAL INFILE %s INTO TABLE side_table", (str(source),))
        assert refused.value.orig.args[0] in LOCAL_INFILE_REFUSED
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM side_table").scalar() == 0
    # The publish's own sessions still stream the day with LOAD DATA LOCAL INFILE.
    assert run_day(fabricate(env, spec, "2026-11-20", list(range(0, 2000))))["rows"] == 2000
    assert len(table_rows(env)) == 2000


@pytest.fixture
def role_user(mariadb_url):
    """A user with every privilege on the test's database, and FILE (the load) only through a
    granted role that is not its default role. Yields (its URL, the role)."""
    admin = create_engine(mariadb_url)
    url = make_url(mariadb_url)
    suffix = uuid.uuid4().hex[:8]
    user, role, password = f"loader_{suffix}", f"s3_load_{suffix}", "loader-pw"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE `{role}`"))
        conn.execute(text(f"GRANT FILE ON *.* TO `{role}`"))
        conn.execute(text(f"CREATE USER `{user}`@'127.0.0.1' IDENTIFIED BY '{password}'"))
        conn.execute(text(f"GRANT ALL ON `{url.database}`.* TO `{user}`@'127.0.0.1'"))
        conn.execute(text(f"GRANT `{role}` TO `{user}`@'127.0.0.1'"))  # granted, not made its default
    yield url.set(username=user, password=password).render_as_string(hide_password=False), role
    with admin.begin() as conn:
        conn.execute(text(f"DROP USER `{user}`@'127.0.0.1'"))
        conn.execute(text(f"DROP ROLE `{role}`"))
    admin.dispose()


def test_load_from_s3_without_the_role_fails_naming_the_setting(tmp_path, role_user, s3_env, monkeypatch):
    url, _role = role_user
    monkeypatch.delenv(LOAD_ROLE_ENV, raising=False)
    env, loaded_from = aurora_env(tmp_path, url, monkeypatch, f"mlbatch-role-{uuid.uuid4().hex[:6]}")
    spec = write_spec(tmp_path)
    try:
        with pytest.raises(PublishError) as refused:
            run_day(fabricate(env, spec, "2026-11-20", list(range(0, 2000))))
        message = str(refused.value)
        assert "LOAD DATA FROM S3" in message and "Access denied" in message
        assert "aurora_load_role" in message and LOAD_ROLE_ENV in message  # the setting
        assert "activate_all_roles_on_login" in message  # and the alternative
        assert loaded_from  # it was the load that was refused
        assert table_rows(env) == [] and log_rows(env) == []
    finally:
        env.appdb.dispose()


def test_load_from_s3_with_the_role_in_the_environment_sets_it_and_loads(tmp_path, role_user, s3_env, monkeypatch):
    url, role = role_user
    monkeypatch.setenv(LOAD_ROLE_ENV, role)
    env, loaded_from = aurora_env(tmp_path, url, monkeypatch, f"mlbatch-role-{uuid.uuid4().hex[:6]}")
    spec = write_spec(tmp_path)
    try:
        result = run_day(fabricate(env, spec, "2026-11-20", list(range(0, 2000))))
        assert result["rows"] == 2000 and len(loaded_from) == 2  # two key ranges, two sessions
        assert len(table_rows(env)) == 2000
        assert f"{MODEL}_history__stage" not in tables(env)
    finally:
        env.appdb.dispose()


def test_load_from_s3_with_the_role_in_the_connection_extra(tmp_path, role_user, s3_env, monkeypatch):
    url, role = role_user
    monkeypatch.delenv(LOAD_ROLE_ENV, raising=False)
    env, _ = aurora_env(tmp_path, url, monkeypatch, f"mlbatch-role-{uuid.uuid4().hex[:6]}")
    parts = make_url(url)
    settings = settings_for(
        "appdb",
        conn_type="mysql",
        host=parts.host,
        port=parts.port,
        schema=parts.database,
        login=parts.username,
        password=parts.password,
        extra={"aurora_load_role": role},
    )
    env.__dict__["appdb"] = hook = AppDbHook.from_settings(settings)  # as from MLBATCH_APPDB_CONN_ID
    assert hook.load_role == role
    spec = write_spec(tmp_path)
    try:
        assert run_day(fabricate(env, spec, "2026-11-20", list(range(0, 500))))["rows"] == 500
    finally:
        hook.dispose()


@pytest.fixture
def aurora_role(mariadb_url):
    """Aurora's AWS_LOAD_S3_ACCESS as a MariaDB role granted to the test user, so that the
    session's SET ROLE (which the proxy passes on) is valid on the server too."""
    admin = create_engine(mariadb_url)
    with admin.begin() as conn:
        conn.execute(text("CREATE ROLE IF NOT EXISTS AWS_LOAD_S3_ACCESS"))
        conn.execute(text("GRANT AWS_LOAD_S3_ACCESS TO CURRENT_USER"))
    yield "AWS_LOAD_S3_ACCESS"
    with admin.begin() as conn:
        conn.execute(text("REVOKE AWS_LOAD_S3_ACCESS FROM CURRENT_USER"))
    admin.dispose()


def test_through_the_aurora_wire_double_set_role_makes_the_refused_load_pass(
    mariadb, mariadb_url, s3_env, s3_endpoint, aurora_role, tmp_path, monkeypatch
):
    """Aurora's own refusal (1227, from devtools' Aurora proxy, which requires the role to be
    active in the session) names the setting; with the setting the same publish loads."""
    bucket = f"mlbatch-role-wire-{uuid.uuid4().hex[:6]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    proxy = AuroraS3Proxy(mariadb.port, s3_endpoint, required_role=aurora_role).start()
    url = make_url(mariadb_url).set(port=proxy.port).render_as_string(hide_password=False)
    spec = write_spec(tmp_path)

    def env_for(home):
        home.mkdir()
        return dataclasses.replace(make_env(home, url), object_store=f"s3://{bucket}/root", appdb_load_from_s3=True)

    try:
        monkeypatch.delenv(LOAD_ROLE_ENV, raising=False)
        env = env_for(tmp_path / "without")
        with pytest.raises(PublishError, match=r"\(1227.*aurora_load_role.*activate_all_roles_on_login"):
            run_day(fabricate(env, spec, "2026-11-20", list(range(0, 1000))))
        assert proxy.refused and table_rows(env) == []
        env.appdb.dispose()

        monkeypatch.setenv(LOAD_ROLE_ENV, aurora_role)
        env = env_for(tmp_path / "with")
        assert run_day(fabricate(env, spec, "2026-11-20", list(range(0, 1000))))["rows"] == 1000
        assert len(proxy.loaded) == 2 and len(table_rows(env)) == 1000
        env.appdb.dispose()
    finally:
        proxy.stop()
