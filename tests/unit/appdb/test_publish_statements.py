"""Golden text of the statements production runs for publish and export (Redshift and Aurora can't run here)."""

from __future__ import annotations

from datetime import date

import pytest
from mlbatch.backends.appdb.mysql_sql import (
    compact_sql,
    expired_partitions,
    guarded_upsert_sql,
    latest_sql,
    load_data_sql,
    side_name,
)
from mlbatch.reporting.statements import aurora_publish_statements, export_statements, production_statements
from mlbatch.spec import load_spec

from tests.support.paths import REPO

SPEC = REPO / "dags" / "specs" / "device_gender.yaml"


@pytest.fixture
def spec(monkeypatch):
    monkeypatch.setenv("MLBATCH_S3_BUCKET", "acme-ml")
    monkeypatch.setenv("MLBATCH_REDSHIFT_IAM_ROLE", "arn:aws:iam::123456789012:role/redshift-copy")
    return load_spec(SPEC)


def test_redshift_export_replaces_the_day_in_one_transaction(spec):
    assert export_statements(spec, "2026-11-22") == [
        "CREATE SCHEMA IF NOT EXISTS ml_exports",
        "CREATE TABLE IF NOT EXISTS ml_exports.device_gender_predictions (entity_key BIGINT NOT NULL, "
        "ds DATE NOT NULL, model_version VARCHAR(64) NOT NULL, label VARCHAR(256) NOT NULL, "
        "score DOUBLE PRECISION NOT NULL)",
        "DELETE FROM ml_exports.device_gender_predictions WHERE ds = '2026-11-22'",
        "COPY ml_exports.device_gender_predictions FROM 's3://acme-ml/export/device_gender/2026-11-22/' "
        "IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' FORMAT AS PARQUET",
        "SELECT COUNT(*) FROM ml_exports.device_gender_predictions WHERE ds = '2026-11-22'",
    ]


def test_export_rejects_a_ds_that_is_not_a_date(spec):
    with pytest.raises(ValueError):
        export_statements(spec, "2026-11-22'; DROP TABLE x; --")


def test_aurora_load_data_statements():
    assert load_data_sql("m_predictions__new") == (
        "LOAD DATA LOCAL INFILE %s INTO TABLE `m_predictions__new` CHARACTER SET utf8mb4 "
        "(`entity_key`, `ds`, `model_version`, `label`, `score`)"
    )
    assert load_data_sql("m_predictions__new", s3_uri="s3://acme-ml/publish/m/2026-11-22/r/predictions.tsv") == (
        "LOAD DATA FROM S3 FILE 's3://acme-ml/publish/m/2026-11-22/r/predictions.tsv' INTO TABLE "
        "`m_predictions__new` CHARACTER SET utf8mb4 (`entity_key`, `ds`, `model_version`, `label`, `score`)"
    )
    with pytest.raises(ValueError, match="plain s3:// URI"):
        load_data_sql("t", s3_uri="s3://b/k' INTO TABLE x")


def test_aurora_publish_is_a_partition_exchange_then_one_upsert_transaction(spec):
    stmts = aurora_publish_statements(spec, "2026-11-22")
    assert stmts[0] == "SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2"
    assert stmts[2].startswith("CREATE TABLE IF NOT EXISTS device_gender_history (")
    assert stmts[2].endswith("PARTITION BY LIST COLUMNS(`ds`) (PARTITION `p_none` VALUES IN ('1000-01-01'))")
    # The staging table: the history's columns and key, unpartitioned, in one statement.
    assert stmts[3].startswith("CREATE TABLE device_gender_history__stage (") and "PARTITION" not in stmts[3]
    assert "PRIMARY KEY (entity_key, ds)" in stmts[3]
    # One LOAD per key range (publish.sessions: 2 by default), each from its own object.
    for i in (0, 1):
        assert stmts[4 + i].startswith(
            f"LOAD DATA FROM S3 FILE 's3://acme-ml/publish/device_gender/2026-11-22/<run>/predictions-00{i}.tsv' "
            "INTO TABLE `device_gender_history__stage`"
        )
    del stmts[5]
    assert stmts[5:8] == [
        "ALTER TABLE `device_gender_history` ADD PARTITION (PARTITION `p20261122` VALUES IN ('2026-11-22'))",
        "ALTER TABLE `device_gender_history` EXCHANGE PARTITION `p20261122` WITH TABLE `device_gender_history__stage` "
        "WITHOUT VALIDATION",  # Aurora MySQL 3; MariaDB validates (tests/integration runs that)
        "START TRANSACTION",
    ]
    # Only the day's partition is read, and a row is replaced only by the same or a newer day.
    assert "FROM `device_gender_history` WHERE `device_gender_history`.`ds` = %(ds)s ON DUPLICATE KEY" in stmts[8]
    assert (
        "`device_gender_predictions`.`score` = IF(VALUES(`ds`) >= `device_gender_predictions`.`ds`, "
        "VALUES(`score`), `device_gender_predictions`.`score`)"
    ) in stmts[8]
    assert stmts[9].startswith("INSERT INTO `ml_publish_log`") and stmts[10] == "COMMIT"
    assert not any("RENAME" in s for s in stmts)  # the tables readers read never see DDL


def test_guarded_upsert_by_key_range():
    sql = guarded_upsert_sql("t", "h", day=True, key_from=True, key_to=True)
    assert sql.endswith(
        "FROM `h` WHERE `h`.`ds` = %(ds)s AND `h`.`entity_key` >= %(key_from)s AND `h`.`entity_key` < %(key_to)s "
        "ON DUPLICATE KEY UPDATE `t`.`model_version` = IF(VALUES(`ds`) >= `t`.`ds`, VALUES(`model_version`), "
        "`t`.`model_version`), `t`.`label` = IF(VALUES(`ds`) >= `t`.`ds`, VALUES(`label`), `t`.`label`), "
        "`t`.`score` = IF(VALUES(`ds`) >= `t`.`ds`, VALUES(`score`), `t`.`score`), "
        "`t`.`ds` = IF(VALUES(`ds`) >= `t`.`ds`, VALUES(`ds`), `t`.`ds`)"
    )


def test_expired_partitions_keep_history_days_back_from_the_newest():
    names = ["p_none", "p20261101", "p20261120", "p20261121", "p20261122", "p20261130"]
    assert expired_partitions(names, date(2026, 11, 22), 2) == ["p20261101", "p20261120"]
    assert expired_partitions(names, date(2026, 11, 22), 1) == ["p20261101", "p20261120", "p20261121"]
    assert expired_partitions(names, date(2026, 11, 22), 35) == []


def test_side_tables_fit_mysql_identifiers():
    long = "m" * 52 + "_predictions"
    names = {side_name(long, s) for s in ("new", "old", "stage")}
    assert len(names) == 3 and all(len(n) <= 64 for n in names)
    assert side_name(long, "new") != side_name("m" * 51 + "x_predictions", "new")


def test_aurora_publish_by_key_range_commits_each_range_then_logs_the_day(spec):
    spec = spec.model_copy(update={"publish": spec.publish.model_copy(update={"commit": "key_range", "sessions": 3})})
    stmts = aurora_publish_statements(spec, "2026-11-22")
    loads = [s for s in stmts if s.startswith("LOAD DATA FROM S3")]
    assert [s.split("' INTO")[0].rsplit("/", 1)[1] for s in loads] == [f"predictions-00{i}.tsv" for i in range(3)]
    begin = stmts.index("START TRANSACTION")
    upsert, commit, log_row = stmts[begin + 1 : begin + 4]
    assert (
        "WHERE `device_gender_history`.`ds` = %(ds)s AND `device_gender_history`.`entity_key` >= %(key_from)s "
        "AND `device_gender_history`.`entity_key` < %(key_to)s ON DUPLICATE KEY UPDATE "
    ) in upsert
    assert commit == "COMMIT" and log_row.startswith("INSERT INTO `ml_publish_log`")


def test_aurora_publish_partitioned_is_a_load_and_an_exchange_then_the_log_row(spec):
    spec = spec.model_copy(update={"publish": spec.publish.model_copy(update={"mode": "partitioned"})})
    stmts = aurora_publish_statements(spec, "2026-11-22")
    exchange = next(i for i, s in enumerate(stmts) if "EXCHANGE PARTITION `p20261122`" in s)
    assert stmts[exchange].endswith("WITHOUT VALIDATION")
    assert stmts[exchange + 1].startswith("INSERT INTO `ml_publish_log`")
    assert stmts[exchange + 2] == "DROP TABLE `device_gender_history__stage`"
    assert not any("INTO `device_gender_predictions`" in s or s == "START TRANSACTION" for s in stmts)  # one write
    printed = dict(production_statements(spec, "2026-11-22"))
    lookup = printed["Aurora: an entity's prediction, as applications read it (publish.mode: partitioned)"]
    assert lookup == latest_sql("device_gender_history", "device_gender_base")
    assert "CREATE TABLE device_gender_base (" in "\n".join(s for t, s in production_statements(spec, "2026-11-22"))


def test_partitioned_lookup_and_compaction_text():
    assert latest_sql("h", "b") == (
        "SELECT `entity_key`, `ds`, `model_version`, `label`, `score` FROM ("
        "(SELECT `entity_key`, `ds`, `model_version`, `label`, `score` FROM `h` WHERE `entity_key` = %(key)s "
        "ORDER BY `ds` DESC LIMIT 1) UNION ALL (SELECT `entity_key`, `ds`, `model_version`, `label`, `score` "
        "FROM `b` WHERE `entity_key` = %(key)s)) `latest` ORDER BY `ds` DESC LIMIT 1"
    )
    moved = compact_sql("b", "h", next_day=True)
    assert moved.startswith("INSERT INTO `b` (`entity_key`, `ds`, `model_version`, `label`, `score`) SELECT `d`.")
    assert (
        "FROM `h` `d` WHERE `d`.`ds` = %(ds)s AND NOT EXISTS (SELECT 1 FROM `h` `n` WHERE "
        "`n`.`entity_key` = `d`.`entity_key` AND `n`.`ds` = %(next_ds)s) ON DUPLICATE KEY UPDATE "
        "`b`.`model_version` = IF(VALUES(`ds`) >= `b`.`ds`"
    ) in moved
    assert "NOT EXISTS" not in compact_sql("b", "h", next_day=False)
