"""The app DB hook against real servers: MariaDB 10.11 (Aurora MySQL's stand-in) and PostgreSQL
(Aurora PostgreSQL's)."""

import pytest
from mlbatch.backends.appdb.hook import AppDbHook
from sqlalchemy import inspect, text

from tests.support.appdb import guarded_upsert_keeps_newer_days


def test_guarded_upsert(appdb_url):
    db = AppDbHook(appdb_url)
    guarded_upsert_keeps_newer_days(db)
    db.dispose()


@pytest.mark.appdb("mariadb")
def test_schema_is_utf8mb4_innodb(appdb_url):
    db = AppDbHook(appdb_url)
    db.ensure_schema([("device_gender", "integer")])
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, engine, table_collation FROM information_schema.tables WHERE table_schema = DATABASE()"
            )
        ).fetchall()
    assert {r[0] for r in rows} >= {"ml_labels", "ml_label_syncs", "ml_model_versions", "device_gender_predictions"}
    assert all(r[1] == "InnoDB" and r[2].startswith("utf8mb4") for r in rows), rows
    # Read by key only: no secondary index for every upsert to maintain.
    assert inspect(db.engine).get_indexes("device_gender_predictions") == []
    db.dispose()


@pytest.mark.appdb("postgresql")
def test_schema_on_postgresql_takes_the_portable_types(appdb_url):
    """schema.py's one definition, created by SQLAlchemy on PostgreSQL: double precision scores,
    a bigint key, a generated bigint id for the label history, no index but the keys."""
    db = AppDbHook(appdb_url)
    db.ensure_schema([("device_gender", "integer"), ("shop_churn", "string")])
    db.ensure_schema([("device_gender", "integer")])  # again: existing tables are left as they are
    names = set(inspect(db.engine).get_table_names())
    assert names >= {"ml_labels", "ml_label_syncs", "ml_label_history", "ml_model_versions", "ml_publish_log"}
    with db.connect() as conn:
        types = dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema()"
                )
            ).fetchall()
        )
        id_default = conn.execute(
            text(
                "SELECT column_default FROM information_schema.columns WHERE table_name = 'ml_label_history' "
                "AND column_name = 'id'"
            )
        ).scalar()
    assert types["device_gender_predictions.entity_key"] == "bigint"
    assert types["shop_churn_predictions.entity_key"] == "character varying"
    assert types["device_gender_predictions.score"] == "double precision"
    assert types["ml_label_history.id"] == "bigint" and id_default.startswith("nextval(")
    assert inspect(db.engine).get_indexes("device_gender_predictions") == []
    db.dispose()
