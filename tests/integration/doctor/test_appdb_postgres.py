"""``mlbatch doctor``'s app DB checks on a real PostgreSQL (Aurora PostgreSQL's stand-in): green for
the application's user as the deploy guide sets it up, and for a user short of grants a FAIL that
names each missing privilege and the GRANT that gives it."""

from __future__ import annotations

import uuid

from mlbatch.cli.doctor.appdb import check_appdb
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.publish import fabricate, make_env, run_day, write_spec


def test_the_owner_of_the_database_passes(tmp_path, postgres_url):
    env = make_env(tmp_path, postgres_url)
    run_day(fabricate(env, write_spec(tmp_path), "2026-11-20", list(range(100))))  # tables and a history exist
    checks = {c.boundary: c for c in check_appdb(env)}
    assert [(c.boundary, c.status) for c in checks.values()] == [("app DB", "ok"), ("app DB grants", "ok")]
    assert (
        "CONNECT, TEMPORARY on t_" in checks["app DB grants"].detail
        and "owns the histories" in checks["app DB grants"].detail
    )


def test_a_user_short_of_grants_fails_with_the_grants_to_run(tmp_path, postgres, postgres_url):
    owner = make_env(tmp_path, postgres_url)
    run_day(fabricate(owner, write_spec(tmp_path), "2026-11-20", list(range(100))))
    owner.appdb.dispose()
    database = make_url(postgres_url).database
    role = f"doctor_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres.admin_url(database), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'ro-pass-1'"))
        conn.execute(text(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC'))
        conn.execute(text(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}"))
    try:
        url = make_url(postgres_url).set(username=role, password="ro-pass-1")  # noqa: S106
        env = make_env(tmp_path / "ro", url.render_as_string(hide_password=False))
        checks = {c.boundary: c for c in check_appdb(env)}
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
    assert checks["app DB"].status == "ok"
    grants = checks["app DB grants"]
    assert grants.status == "FAIL", grants
    assert grants.detail.startswith(f"{role} lacks TEMPORARY on database {database}; CREATE on schema public; ")
    assert (
        "DELETE, UPDATE on 9 tables" in grants.detail and "USAGE on sequences ml_label_history_id_seq" in grants.detail
    )
    assert grants.detail.endswith("ownership of pubtest_history (the publish attaches and drops its day partitions)")
    assert grants.fix.split("; ") == [
        f'GRANT TEMPORARY ON DATABASE "{database}" TO "{role}"',
        f'GRANT CREATE ON SCHEMA "public" TO "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "public" TO "{role}"',
        f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "public" TO "{role}"',
        f'ALTER TABLE "public"."pubtest_history" OWNER TO "{role}"',
    ]
