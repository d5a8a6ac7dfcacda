"""The registries that pick a backend per boundary: the app DB's by URL scheme (and its statements
per backend), the warehouse's, the object store's and the launcher's; an unknown one is named with
the known ones."""

from __future__ import annotations

from datetime import date

import pytest
from mlbatch.backends.appdb import locks, schema
from mlbatch.backends.appdb.backends import BACKENDS, AppDbConfigError, backend_for
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.backends.appdb.postgres_publish import NAME_LIMIT, partition_name, pg_name
from mlbatch.backends.env import Environment
from mlbatch.backends.store import ObjectStore, StoreError, filesystem_for
from mlbatch.backends.warehouse import WAREHOUSES, get_warehouse
from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse
from sqlalchemy.dialects import postgresql


@pytest.mark.parametrize(
    ("url", "backend", "driver"),
    [
        ("sqlite:////var/app.db", "sqlite", "sqlite+pysqlite"),
        ("mysql://u@db/app", "mysql", "mysql+pymysql"),  # a bare scheme gets the pinned driver
        ("mysql+pymysql://u@db/app", "mysql", "mysql+pymysql"),
        ("postgresql://u@db/app", "postgresql", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u@db/app", "postgresql", "postgresql+psycopg2"),
    ],
)
def test_app_db_url_picks_its_backend_and_driver(url, backend, driver):
    chosen = backend_for(url)
    assert chosen is BACKENDS[backend] and AppDbHook(url).dialect == backend
    assert chosen.url(url).drivername == driver


def test_an_unknown_app_db_is_refused_when_the_hook_is_made():
    with pytest.raises(
        AppDbConfigError, match=r"backend 'mssql' is not one of sqlite:// .*, mysql:// .*, postgresql://"
    ):
        AppDbHook("mssql+pyodbc://u:pw@db/app")


def test_postgres_guarded_upsert_is_on_conflict_with_the_newer_day_guard():
    stmt = BACKENDS["postgresql"].upsert(schema.predictions_table("m", "integer"), ["score", "ds"], "ds")
    sql = " ".join(str(stmt.compile(dialect=postgresql.dialect())).split())
    assert "ON CONFLICT (entity_key) DO UPDATE SET ds = excluded.ds, score = excluded.score" in sql
    assert sql.endswith("WHERE excluded.ds >= m_predictions.ds")


def test_postgres_names_fit_63_characters_and_stay_distinct():
    longest = "m" * 52 + "_history"  # the spec allows model names of 52 characters
    a, b = partition_name(longest, date(2026, 11, 20)), partition_name(longest[:-9] + "x_history", date(2026, 11, 20))
    assert len(a) <= NAME_LIMIT and len(b) <= NAME_LIMIT and a != b and a.endswith("_p20261120")
    assert pg_name("pubtest_history", "p20261120") == "pubtest_history_p20261120"


def test_advisory_key_is_a_stable_signed_bigint():
    key = locks.advisory_key("mlb.pub.pubtest_predictions")
    assert key == 302830010657732592  # the same in every process: never Python's salted hash()
    assert -(2**63) <= locks.advisory_key("x" * 500) < 2**63


def test_warehouse_registry(tmp_path):
    assert set(WAREHOUSES) == {"duckdb", "redshift"}
    chosen = get_warehouse(f"duckdb://{tmp_path / 'w.duckdb'}")
    assert isinstance(chosen, DuckDBWarehouse) and chosen.path == tmp_path / "w.duckdb"
    for bad in ("bigquery://project", "warehouse.duckdb"):
        with pytest.raises(ValueError, match=r"expected duckdb:///path .* known schemes: duckdb, redshift"):
            get_warehouse(bad)


def test_object_store_registry(tmp_path):
    with pytest.raises(StoreError, match=r"scheme 'gs' is not one of file, s3"):
        filesystem_for("gs://bucket/key")
    with pytest.raises(StoreError, match=r"MLBATCH_OBJECT_STORE='gs://bucket/root': expected s3://bucket/prefix"):
        ObjectStore("gs://bucket/root").prepare()
    env = Environment(
        home=tmp_path,
        appdb_url="sqlite:///unused.db",
        object_store=(tmp_path / "made" / "objects").as_uri(),
        warehouse_url="duckdb:///unused.duckdb",
        launcher_kind="local",
        specs_dir=tmp_path,
    )
    assert env.store.is_local and (tmp_path / "made" / "objects").is_dir()  # a local root is created
