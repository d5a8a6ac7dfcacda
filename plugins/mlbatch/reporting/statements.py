"""The statements production runs for a model and day, as text: what ``mlbatch sql`` prints.

Nothing here runs anything. Bucket and role come from ``MLBATCH_S3_BUCKET`` and
``MLBATCH_REDSHIFT_IAM_ROLE`` when set, else they are shown as placeholders; the UNLOAD goes
under ``MLBATCH_OBJECT_STORE`` when that is an ``s3://`` root (as RedshiftWarehouse does).
"""

from __future__ import annotations

import os
from datetime import date

from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateIndex, CreateTable

from mlbatch import names
from mlbatch.backends.appdb import locks, schema
from mlbatch.backends.appdb import mysql_sql as sql
from mlbatch.backends.warehouse.redshift import replace_day_statements
from mlbatch.backends.warehouse.sql import render_spec_query, unload_statement
from mlbatch.spec import ModelSpec
from mlbatch.spec.query import Stage
from mlbatch.stages.context import check_ds

RUN = "<run>"  # the run key's place in a key: the statements are the same for every run


def _bucket() -> str:
    return os.environ.get("MLBATCH_S3_BUCKET", "set-mlbatch-s3-bucket")


def _unload_root() -> str:
    """Where RedshiftWarehouse unloads: the object store's root when it is S3, else the bucket."""
    store = os.environ.get("MLBATCH_OBJECT_STORE", "")
    return store.rstrip("/") if store.startswith("s3://") else f"s3://{_bucket()}"


def _role() -> str:
    return os.environ.get("MLBATCH_REDSHIFT_IAM_ROLE", "arn:aws:iam::000000000000:role/set-MLBATCH_REDSHIFT_IAM_ROLE")


def export_statements(spec: ModelSpec, ds: str) -> list[str]:
    """The day's export as ``RedshiftWarehouse.replace_day`` runs it (one Data API batch, one
    transaction: create if missing, delete the day, COPY it in), then the reconciliation count."""

    table = names.export_table(spec.name)
    day = date.fromisoformat(ds).isoformat()  # validated: the only value pasted into the text
    folder = f"{_unload_root()}/{names.export_prefix(spec.name, day)}"
    key_type = "BIGINT" if spec.entity.type == "integer" else "VARCHAR(256)"
    batch = replace_day_statements(table, day, folder, _role(), key_type)
    return [*batch, f"SELECT COUNT(*) FROM {table} WHERE ds = '{day}'"]


def aurora_publish_statements(spec: ModelSpec, ds: str) -> list[str]:
    """The publish of a day as Aurora runs it with ``MLBATCH_AURORA_LOAD_FROM_S3=1`` (see
    appdb.mysql_publish; every session first sets short lock waits; the transaction's parameters
    are bound). With several load sessions (integer keys), the LOAD runs once per key range, each
    in its own session, from its own object; with ``publish.commit: key_range`` so does the
    upsert, each range in its own transaction, and the log row follows the last one."""

    table, day = spec.predictions_table, date.fromisoformat(ds)
    history = schema.history_table(spec.name, spec.entity.type)
    stage = sql.side_name(history.name, "stage")
    ranges = spec.publish.sessions if spec.entity.type == "integer" else 1
    tsvs = [f"s3://{_bucket()}/{names.publish_share_key(spec.name, day.isoformat(), RUN, i)}" for i in range(ranges)]
    per_range = spec.publish.commit == "key_range" and ranges > 1
    upsert = sql.guarded_upsert_sql(table, history.name, day=True, key_from=per_range, key_to=per_range)
    log_row = sql.log_upsert_sql(schema.publish_log.name)
    return [
        f"SET SESSION lock_wait_timeout = {locks.LOCK_WAIT_S}, innodb_lock_wait_timeout = {locks.LOCK_WAIT_S}",
        f"SELECT GET_LOCK('{sql.model_lock(table)}', {sql.LOCK_TIMEOUT_S})",
        sql.history_ddl(history),
        sql.staging_ddl(history, stage),
        *(sql.load_data_sql(stage, s3_uri=tsv) for tsv in tsvs),
        sql.add_partition_sql(history.name, day),
        sql.exchange_sql(history.name, day, stage, validate=False),
        *_visible(spec, upsert, log_row, per_range),
        f"DROP TABLE {sql.q(stage)}",
    ]


def _visible(spec: ModelSpec, upsert: str, log_row: str, per_range: bool) -> list[str]:
    """What makes the exchanged day visible: the upsert (in one transaction with the log row, or
    one per key range), or with ``publish.mode: partitioned`` the exchange itself, then the log row."""
    if spec.publish.mode == "partitioned":
        return [log_row]
    return (
        ["START TRANSACTION", upsert, "COMMIT", log_row]
        if per_range
        else ["START TRANSACTION", upsert, log_row, "COMMIT"]
    )


def aurora_ddl(spec: ModelSpec | None = None) -> list[str]:
    tables = list(schema.metadata.sorted_tables)
    if spec is not None:
        tables.append(schema.predictions_table(spec.name, spec.entity.type))
        if spec.publish.mode == "partitioned":
            tables.append(schema.base_table(spec.name, spec.entity.type))
    dialect = mysql.dialect()
    out = []
    for t in tables:
        out.append(str(CreateTable(t).compile(dialect=dialect)).strip())
        indexes = sorted(t.indexes, key=lambda i: str(i.name))  # every index of ours is named
        out += [str(CreateIndex(i).compile(dialect=dialect)).strip() for i in indexes]
    return out


def aurora_schema_sql() -> str:
    """The text of sql/aurora/schema.sql."""
    head = (
        "-- The app DB's shared tables for Aurora MySQL 8 / MariaDB 10.11, rendered from\n"
        "-- plugins/mlbatch/backends/appdb/schema.py by `mlbatch.reporting.statements.aurora_schema_sql()`\n"
        "-- (tests/unit/appdb/test_hook.py keeps them in sync). Each model adds <model>_predictions:\n"
        "-- see `mlbatch sql <model> --ds DATE`.\n\n"
    )
    return head + ";\n\n".join(aurora_ddl()) + ";\n"


def production_statements(spec: ModelSpec, ds: str) -> list[tuple[str, str]]:
    ds = check_ds(ds)
    out = []
    queries: tuple[tuple[Stage, str], ...] = (("training", "train"), ("scoring", "score"))
    for stage, purpose in queries:
        query = render_spec_query(spec, stage, ds)
        prefix = f"{_unload_root()}/{names.unload_prefix(spec.name, purpose, ds, RUN)}"
        out.append((f"Redshift: UNLOAD {stage} features", unload_statement(query, s3_prefix=prefix, iam_role=_role())))
    out += [(f"Redshift: export {ds}", s) for s in export_statements(spec, ds)]
    ddl = aurora_ddl(spec)
    for table in (spec.predictions_table, names.base_table(spec.name)):
        out += [(f"Aurora: {table}", s) for s in ddl if f"CREATE TABLE {table} (" in s]
    if spec.publish.mode == "partitioned":
        lookup = sql.latest_sql(names.history_table(spec.name), names.base_table(spec.name))
        out.append(("Aurora: an entity's prediction, as applications read it (publish.mode: partitioned)", lookup))
    how = "LOAD DATA FROM S3"
    if spec.entity.type == "integer" and spec.publish.sessions > 1:
        how += f"; each LOAD in its own session, {spec.publish.sessions} at once"
        if spec.publish.commit == "key_range":
            how += ", and each range's upsert in its own transaction, the log row after the last"
    if spec.publish.mode == "partitioned":
        how += "; publish.mode partitioned: the exchange makes the day visible, no upsert"
    out += [(f"Aurora: publish {ds} ({how})", s) for s in aurora_publish_statements(spec, ds)]
    return out
