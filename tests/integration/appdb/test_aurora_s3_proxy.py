"""The production publish with ``LOAD DATA FROM S3``, through the Aurora double at the MySQL wire
(devtools/devservers/aurora_proxy.py): no Python-level patch of the load; PyMySQL sends Aurora's
statement, the proxy serves the object from the S3 double, MariaDB loads it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import boto3
import pytest
from sqlalchemy.engine import make_url

from devtools.devservers.aurora_proxy import AuroraS3Proxy
from tests.support.publish import fabricate, log_rows, make_env, run_day, table_rows, write_spec

BUCKET = "mlbatch-aurora-wire"


@pytest.fixture
def proxy(mariadb, s3_env, s3_endpoint) -> Iterator[AuroraS3Proxy]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    server = AuroraS3Proxy(mariadb.port, s3_endpoint).start()
    yield server
    server.stop()


def _env_through(proxy: AuroraS3Proxy, mariadb_url: str, tmp_path):
    url = make_url(mariadb_url).set(port=proxy.port).render_as_string(hide_password=False)
    return dataclasses.replace(make_env(tmp_path, url), object_store=f"s3://{BUCKET}/root", appdb_load_from_s3=True)


def test_a_day_loads_from_s3_objects_the_proxy_serves(proxy, mariadb_url, tmp_path):
    env = _env_through(proxy, mariadb_url, tmp_path)
    spec = write_spec(tmp_path)
    try:
        run_day(fabricate(env, spec, "2026-11-20", list(range(0, 3000)), [0.21] * 3000))
        run_day(fabricate(env, spec, "2026-11-21", list(range(1000, 4000)), [0.27] * 3000))
        # publish.sessions defaults to 2: two key ranges, one S3 object and one session each, per day.
        assert (
            sorted(u.rsplit("/", 1)[1] for u in proxy.loaded)
            == ["predictions-000.tsv"] * 2 + ["predictions-001.tsv"] * 2
        )
        assert all(u.startswith(f"s3://{BUCKET}/root/publish/pubtest/") for u in proxy.loaded)
        rows = {r[0]: r[1] for r in table_rows(env)}
        assert len(rows) == 4000 and rows[0] == "2026-11-20" and rows[3999] == "2026-11-21"
        assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 3000), ("2026-11-21", 3000)]
        assert env.store.list("publish/") == []  # the staged objects are deleted after the load
    finally:
        env.appdb.dispose()


def test_a_load_refused_for_want_of_the_active_role_writes_nothing(proxy, mariadb_url, tmp_path):
    """Aurora MySQL 3 refuses FROM S3 unless the granted role is active in the session: the
    publish fails naming the error, and the day's table and log are untouched."""
    env = _env_through(proxy, mariadb_url, tmp_path)
    spec = write_spec(tmp_path)
    try:
        run_day(fabricate(env, spec, "2026-11-20", list(range(0, 1000)), [0.21] * 1000))
        before, before_log = table_rows(env), log_rows(env)
        proxy.required_role = "AWS_LOAD_S3_ACCESS"
        with pytest.raises(Exception, match=r"AWS_LOAD_S3_ACCESS"):
            run_day(fabricate(env, spec, "2026-11-21", list(range(500, 1500)), [0.27] * 1000))
        assert proxy.refused and table_rows(env) == before and log_rows(env) == before_log
    finally:
        env.appdb.dispose()
