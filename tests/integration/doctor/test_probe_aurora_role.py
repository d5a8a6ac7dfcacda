"""The LOAD DATA FROM S3 role probe on MariaDB (roles as in Aurora MySQL 3): the role must be
granted AND active in a load session, after the SET ROLE the publish runs or at login."""

from __future__ import annotations

import uuid

import pytest
from mlbatch.backends.env import Environment
from mlbatch.cli.doctor.appdb import check_appdb
from mlbatch.cli.doctor.aurora_role import LOAD_ROLE_ENV, active_roles
from sqlalchemy import create_engine, text


@pytest.fixture
def app_user(mariadb, mariadb_url, monkeypatch):
    """A user of its own on a fresh database, a role of its own (names are server-wide)."""
    database = mariadb_url.rsplit("/", 1)[1]
    user, role = f"app_{uuid.uuid4().hex[:8]}", f"load_s3_{uuid.uuid4().hex[:8]}"
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw-{user}'"))
        conn.execute(text(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'127.0.0.1'"))
        conn.execute(text(f"CREATE ROLE {role}"))
    for name in ("MLBATCH_APPDB_CONN_ID", LOAD_ROLE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLBATCH_APPDB_URL", f"mysql+pymysql://{user}:pw-{user}@127.0.0.1:{mariadb.port}/{database}")
    monkeypatch.setenv("MLBATCH_AURORA_LOAD_FROM_S3", "1")
    yield admin, user, role
    with admin.begin() as conn:
        conn.execute(text(f"DROP USER '{user}'@'127.0.0.1'"))
        conn.execute(text(f"DROP ROLE {role}"))
    admin.dispose()


def role_check():
    (check,) = [c for c in check_appdb(Environment.from_env()) if c.boundary == "app DB load role"]
    return check


def test_current_role_is_parsed_for_mysql_and_mariadb():
    assert active_roles("`AWS_LOAD_S3_ACCESS`@`%`,`reader`@`%`") == {"aws_load_s3_access", "reader"}
    assert active_roles("AWS_LOAD_S3_ACCESS") == {"aws_load_s3_access"}
    assert active_roles("NONE") == active_roles(None) == set()


def test_granted_role_activated_by_set_role_passes(app_user, monkeypatch):
    admin, user, role = app_user
    with admin.begin() as conn:
        conn.execute(text(f"GRANT {role} TO '{user}'@'127.0.0.1'"))
    monkeypatch.setenv(LOAD_ROLE_ENV, role)
    check = role_check()
    assert check.status == "ok" and f"after SET ROLE `{role}`" in check.detail, check


def test_granted_role_not_activated_fails_naming_both_ways_to_activate_it(app_user, monkeypatch):
    admin, user, role = app_user
    with admin.begin() as conn:
        conn.execute(text(f"GRANT {role} TO '{user}'@'127.0.0.1'"))
    monkeypatch.setattr("mlbatch.cli.doctor.aurora_role.DEFAULT_LOAD_ROLE", role)  # no setting: the default role
    check = role_check()
    assert check.status == "FAIL" and "is not active in a new session" in check.detail, check
    assert "aurora_load_role" in check.fix and LOAD_ROLE_ENV in check.fix
    assert "activate_all_roles_on_login=1" in check.fix


def test_role_active_at_login_passes_without_the_setting(app_user, monkeypatch):
    admin, user, role = app_user
    with admin.begin() as conn:
        conn.execute(text(f"GRANT {role} TO '{user}'@'127.0.0.1'"))
        conn.execute(text(f"SET DEFAULT ROLE {role} FOR '{user}'@'127.0.0.1'"))  # MariaDB's activate on login
    monkeypatch.setattr("mlbatch.cli.doctor.aurora_role.DEFAULT_LOAD_ROLE", role)
    check = role_check()
    assert check.status == "ok" and "at login" in check.detail, check


def test_role_named_but_not_granted_fails_with_the_grant(app_user, monkeypatch):
    _, user, role = app_user
    monkeypatch.setenv(LOAD_ROLE_ENV, role)
    check = role_check()
    assert check.status == "FAIL" and f"SET ROLE `{role}` fails" in check.detail, check
    assert check.fix.startswith(f"GRANT {role} TO {user}@")


def test_no_probe_without_load_from_s3(app_user, monkeypatch):
    monkeypatch.delenv("MLBATCH_AURORA_LOAD_FROM_S3")
    assert "app DB load role" not in [c.boundary for c in check_appdb(Environment.from_env())]
