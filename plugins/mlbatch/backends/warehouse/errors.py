"""Errors every warehouse raises (Redshift and its embedded stand-in alike).

Their own module, free of any backend: a caller catches them without importing DuckDB or the
Redshift hook, and the Redshift module never imports the embedded warehouse to get them.
"""

from __future__ import annotations

from mlbatch.errors import StageFailed


class WarehouseError(StageFailed, RuntimeError):
    """Something the warehouse could not do; the message names the table, prefix or statement."""


class UnloadError(WarehouseError):
    """An unload could not run; the message names the prefix or file."""


class RedshiftStatementError(WarehouseError):
    """A Data API statement failed or was aborted; names the statement id and Redshift's error."""

    def __init__(self, statement_id: str, status: str, error: str, sql: str):
        self.statement_id, self.status, self.error = statement_id, status, error
        first_line = sql.strip().splitlines()[0][:120] if sql.strip() else ""
        super().__init__(f"Redshift statement {statement_id} {status}: {error} (statement: {first_line} ...)")
