"""The embedded warehouse's daily export of predictions: one day of ``ml_exports.<model>_predictions``
replaced in one DuckDB transaction (Redshift: DELETE the day + COPY, see :mod:`mlbatch.reporting.statements`).
The table name comes from a validated spec name, never from data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mlbatch.backends.store import ObjectStore, filesystem_for, row_group_batches

# A writable connection to the warehouse file (DuckDBWarehouse's, which waits for its lock).
Connect = Callable[[], duckdb.DuckDBPyConnection]

BATCH_ROWS = 65_536  # rows per batch streamed from an export file
EXPORT_MEMORY_LIMIT = "256MB"

_EXPORT_COLUMNS = (
    "entity_key {key}, ds DATE NOT NULL, model_version VARCHAR NOT NULL, label VARCHAR NOT NULL, score DOUBLE NOT NULL"
)


def ident(table: str) -> str:
    return ".".join(f'"{part}"' for part in table.split("."))


def export_batches(uris: list[str]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The files' schema (from the first footer) and their rows as a stream of record batches."""
    fs, path = filesystem_for(uris[0])
    with fs.open_input_file(path) as f:
        schema = pq.ParquetFile(f).schema_arrow

    def batches() -> Iterator[pa.RecordBatch]:
        for uri in uris:
            fs, path = filesystem_for(uri)
            with fs.open_input_file(path) as f:
                yield from row_group_batches(pq.ParquetFile(f, pre_buffer=True), BATCH_ROWS)

    return schema, batches()


def replace_day(connect: Connect, table: str, ds: str, uris: list[str], store: ObjectStore) -> int:
    """Replace one ``ds`` of ``table`` with the rows of the parquet files, in one transaction.

    The files stream into DuckDB as an Arrow record-batch reader (the day is never one table in
    memory); the DELETE and the INSERT commit together, so a reader sees the old day or the new.
    """
    if not uris:
        raise ValueError(f"replace_day {table} ds={ds}: no export files given")
    for uri in uris:
        store.key(uri)  # every file must live in this store (raises naming the URI otherwise)
    schema, batches = export_batches(uris)
    return replace_day_stream(connect, table, ds, schema, batches)


def replace_day_stream(
    connect: Connect, table: str, ds: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> int:
    """Replace one ``ds`` of ``table`` with a stream of record batches, in one transaction.

    The INSERT pulls the batches as they come; an exception raised by the iterator rolls the
    day back (a writer that decides late, e.g. after a gate, can still refuse the commit).
    """
    key_type = "BIGINT" if pa.types.is_integer(schema.field("entity_key").type) else "VARCHAR"
    schema_name = table.split(".")[0]
    with connect() as con:
        # DuckDB keeps written blocks in its buffer pool (up to 80% of RAM by default) until a
        # checkpoint: cap it so the export's memory does not grow with the day.
        con.execute(f"SET memory_limit = '{EXPORT_MEMORY_LIMIT}'")
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
        con.execute(f"CREATE TABLE IF NOT EXISTS {ident(table)} ({_EXPORT_COLUMNS.format(key=key_type)})")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {ident(table)} WHERE ds = ?::DATE", [ds])
            con.register("_export_stream", pa.RecordBatchReader.from_batches(schema, batches))
            con.execute(
                f"INSERT INTO {ident(table)} SELECT entity_key, ds::DATE, model_version, label, score "
                "FROM _export_stream"
            )
            con.unregister("_export_stream")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        counted = con.execute(f"SELECT count(*) FROM {ident(table)} WHERE ds = ?::DATE", [ds]).fetchone()
        assert counted is not None  # count(*) returns one row
        rows: int = counted[0]
        return rows
