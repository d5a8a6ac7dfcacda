"""The app DB hook against a real MariaDB 10.11 server (Aurora MySQL's stand-in)."""

from mlbatch.appdb.hook import AppDbHook
from sqlalchemy import inspect, text

from tests.support.appdb import guarded_upsert_keeps_newer_days


def test_guarded_upsert_on_mariadb(mariadb_url):
    db = AppDbHook(mariadb_url)
    guarded_upsert_keeps_newer_days(db)
    db.dispose()


def test_schema_is_utf8mb4_innodb(mariadb_url):
    db = AppDbHook(mariadb_url)
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
