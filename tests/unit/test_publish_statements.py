"""Golden text of the statements production runs for publish and export (Redshift and Aurora can't run here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlbatch.appdb.bulk import load_data_sql, side_name
from mlbatch.spec import load_spec
from mlbatch.statements import aurora_publish_statements, export_statements

SPEC = Path(__file__).resolve().parents[2] / "dags" / "specs" / "device_gender.yaml"


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


def test_aurora_daily_publish_ends_in_one_rename_of_table_and_log(spec):
    stmts = aurora_publish_statements(spec, "2026-11-22")
    assert stmts[2].startswith(
        "LOAD DATA FROM S3 FILE 's3://acme-ml/publish/device_gender/2026-11-22/<run>/predictions.tsv' "
        "INTO TABLE `device_gender_predictions__new`"
    )
    assert stmts[-1] == (
        "RENAME TABLE `device_gender_predictions` TO `device_gender_predictions__old`, "
        "`device_gender_predictions__new` TO `device_gender_predictions`, "
        "`ml_publish_log` TO `ml_publish_log__old`, `ml_publish_log__new` TO `ml_publish_log`"
    )


def test_side_tables_fit_mysql_identifiers():
    long = "m" * 52 + "_predictions"
    names = {side_name(long, s) for s in ("new", "old", "stage")}
    assert len(names) == 3 and all(len(n) <= 64 for n in names)
    assert side_name(long, "new") != side_name("m" * 51 + "x_predictions", "new")
