"""The app database's tables (Aurora MySQL or Aurora PostgreSQL in production, SQLite embedded,
MariaDB and PostgreSQL in tests).

Defined once with SQLAlchemy Core so the DDL is generated for each dialect from one source, with
every identifier quoted by the dialect; ``sql/aurora/schema.sql`` is that DDL rendered for MySQL,
kept in sync by a test. The types are the portable ones (``Double`` is MySQL's DOUBLE and
PostgreSQL's DOUBLE PRECISION; the label history's id is a BIGSERIAL there); MySQL's table options
(InnoDB, utf8mb4, a binary collation) are ignored by the other dialects.
Keys are stored as text in the shared label table (a model's key may be an integer or a
string); the per-model predictions table uses the key's real type so services can join on it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from mlbatch import names

# Any: Table's **kw (typed as str, mypy would match the values against Table's typed keywords).
MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

metadata = MetaData()

labels = Table(
    "ml_labels",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("entity_key", String(255), primary_key=True),
    Column("label", String(255), nullable=False),
    Column("sync_id", String(100), nullable=False, comment="sync that last wrote this row"),
    Column("updated_at", DateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

label_syncs = Table(
    "ml_label_syncs",
    metadata,
    Column("sync_id", String(100), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("rows_read", Integer, nullable=False, default=0),
    Column("accepted", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("inserted", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0),
    Column("content_hash", String(64), nullable=False),
    Column("verdict", String(32), nullable=False, comment="checked, blocked, applied, no_change"),
    Column("message", Text),
    Column("snapshot_uri", String(1024), comment="labels parquet this sync produced, if it changed any"),
    Index("ix_ml_label_syncs_model", "model", "finished_at"),
    **MYSQL_TABLE_ARGS,
)

label_history = Table(
    "ml_label_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("entity_key", String(255), nullable=False),
    Column("old_label", String(255), comment="NULL: the key was added"),
    Column("new_label", String(255), comment="NULL: the key was deleted"),
    Column("sync_id", String(100), nullable=False),
    Column("changed_at", DateTime, nullable=False),
    Index("ix_ml_label_history_key", "model", "entity_key"),
    **MYSQL_TABLE_ARGS,
)

model_versions = Table(
    "ml_model_versions",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("family", String(32), nullable=False),
    Column("status", String(16), nullable=False, comment="candidate, pending_approval, production, rejected, retired"),
    Column("metric", String(32), nullable=False),
    Column("value", Double, nullable=False),
    Column("metrics_json", Text, nullable=False),
    Column("artifact_uri", String(1024), nullable=False),
    Column("lineage_json", Text, nullable=False),
    Column("reason", Text, comment="why the gate promoted or rejected it"),
    Column("created_at", DateTime, nullable=False),
    Column("decided_at", DateTime),
    Index("ix_ml_model_versions_status", "model", "status"),
    **MYSQL_TABLE_ARGS,
)

publish_log = Table(
    "ml_publish_log",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("ds", Date, primary_key=True),
    Column("model_version", String(64), nullable=False),
    Column("rows_published", Integer, nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("published_at", DateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)


def _latest_columns(key_type: str) -> list[Column[Any]]:
    """One row per entity: the columns of ``<model>_predictions`` and of ``<model>_base``."""
    return [
        Column(
            "entity_key",
            BigInteger if key_type == "integer" else String(255),
            primary_key=True,
            autoincrement=False,  # the entity's own id, never generated here
        ),
        Column("ds", Date, nullable=False, comment="scoring day; an older day never replaces a newer"),
        Column("model_version", String(64), nullable=False),
        Column("label", String(255), nullable=False),
        Column("score", Double, nullable=False),  # MySQL FLOAT is single precision
        # No index on ds: the application reads by key, "the rows of day X" is the history's
        # partition, and the newest day is found there too (mysql_publish). Each index here is
        # work in every row of every upsert: dropping it saved about a fifth of the upsert's
        # time (1M rows, 4.3 vs 5.3-6.0 s). Tables created before keep theirs (harmless).
    ]


def predictions_table(model: str, key_type: str, md: MetaData | None = None) -> Table:
    """``<model>_predictions``: one row per entity, from the newest day that scored it."""
    md = md if md is not None else MetaData()
    return Table(names.predictions_table(model), md, *_latest_columns(key_type), **MYSQL_TABLE_ARGS)


def base_table(model: str, key_type: str, md: MetaData | None = None) -> Table:
    """``<model>_base`` (``publish.mode: partitioned``): the newest prediction of each entity whose
    day has left ``<model>_history``. Written only when a day expires (``appdb.mysql_sql.compact_sql``)
    or by a backfill older than the history keeps; readers take the newer of an entity's row here
    and its newest in the history (``appdb.mysql_sql.latest_sql``)."""
    md = md if md is not None else MetaData()
    return Table(names.base_table(model), md, *_latest_columns(key_type), **MYSQL_TABLE_ARGS)


def history_table(model: str, key_type: str, md: MetaData | None = None) -> Table:
    """``<model>_history``: every published day's predictions, one row per (entity, day).

    Its primary key (entity_key, ds) answers "an entity's predictions by day" from the index
    alone. On MySQL it is partitioned by day (``appdb.mysql_sql.history_ddl``): a day is swapped in
    whole with ``EXCHANGE PARTITION`` and expires with ``DROP PARTITION`` (``publish.history_days``).
    On PostgreSQL it is ``PARTITION BY LIST (ds)`` too (``postgresql_partition_by``; a partition per
    day, attached by ``appdb.postgres_publish``), so a day's rows are one partition and an expired
    day is dropped whole. Other dialects ignore the option.
    """
    return Table(
        names.history_table(model),
        md if md is not None else MetaData(),
        Column(
            "entity_key", BigInteger if key_type == "integer" else String(255), primary_key=True, autoincrement=False
        ),
        Column("ds", Date, primary_key=True),
        Column("model_version", String(64), nullable=False),
        Column("label", String(255), nullable=False),
        Column("score", Double, nullable=False),
        postgresql_partition_by="LIST (ds)",
        **MYSQL_TABLE_ARGS,
    )


def _model_of(predictions: Table) -> tuple[str, str]:
    model = names.model_of_predictions_table(predictions.name)
    return model, "integer" if isinstance(predictions.c.entity_key.type, BigInteger) else "string"


def history_for(predictions: Table) -> Table:
    """The history table of a ``<model>_predictions`` table (same key type)."""
    return history_table(*_model_of(predictions))


def base_for(predictions: Table) -> Table:
    """The base table of a ``<model>_predictions`` table (same key type)."""
    return base_table(*_model_of(predictions))


# Realized performance (mlbatch.stages.realized): a published day's predictions measured against
# the labels that arrived for its entities, one row per (version, day, metric); a rerun replaces it.
realized_performance = Table(
    "ml_realized_performance",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("model_version", String(64), primary_key=True),
    Column("ds", Date, primary_key=True),
    Column("metric", String(32), primary_key=True),
    Column("value", Double, comment="NULL: not defined on these rows (e.g. AUC with one class)"),
    Column("n_labelled", Integer, nullable=False),
    Column("ci_low", Double),
    Column("ci_high", Double),
    Column("measured_at", DateTime, nullable=False),
    Column("label_sync_id", String(100), nullable=False, comment="sync whose labels were measured"),
    Column("alerted_at", DateTime, comment="when a degradation alert named this row (one alert per row)"),
    Index("ix_ml_realized_performance_ds", "model", "ds"),
    **MYSQL_TABLE_ARGS,
)

# Flags on registry versions that leave their status alone (a degraded production version stays
# production until a person or a retrained version replaces it).
model_flags = Table(
    "ml_model_flags",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("flag", String(32), primary_key=True, comment="degraded"),
    Column("note", Text, nullable=False),
    Column("flagged_at", DateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)
