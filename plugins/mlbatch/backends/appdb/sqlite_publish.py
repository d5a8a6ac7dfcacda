"""Publishing a day into SQLite (the embedded stack's app DB): the same promises as Aurora's
publisher in one ``BEGIN IMMEDIATE`` transaction (SQLite has one writer): the history's day
deleted and inserted, the guarded upsert into the latest table in batches, the count checked,
the log row, the expired history days deleted. A kill anywhere leaves the file as it was."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Connection, Table, delete, func, insert, select

from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.checksum import RowChecksum
from mlbatch.backends.appdb.publisher import READ, UPDATE, AppDb, Day, Published, check_count


class SqlitePublisher:
    """The :class:`~mlbatch.backends.appdb.publisher.Publisher` of the embedded stack."""

    def __init__(self, db: AppDb):
        self.db = db

    def publish(self, day: Day) -> Published:
        day.upsert_only("SQLite")
        self.db.ensure_schema([(day.model, day.key_type)])
        history = schema.history_for(day.table)
        history.create(self.db.engine, checkfirst=True)
        checksum = RowChecksum()
        with self.db.begin() as conn:
            conn.execute(delete(history).where(history.c.ds == day.ds))
            for batch in day.read(READ):
                checksum.update(batch)
                rows = [dict(r, ds=day.ds) for r in batch.to_pylist()]
                if rows:
                    conn.execute(insert(history), rows)
                    self.db.upsert(conn, day.table, rows, update=list(UPDATE), newer_than="ds")
            check_count(f"insert into {day.table.name}", checksum.rows, day.rows)  # raising rolls back
            row = day.log_row(checksum)
            self.db.upsert(conn, schema.publish_log, [row], update=[c for c in row if c not in ("model", "ds")])
            _expire_history(conn, history, day.ds, day.history_days)
        return Published(checksum.rows, checksum.hexdigest(), "upsert")

    def stop(self) -> None:
        """Nothing to stop: the publish runs in this process, in one transaction of the database
        file; the process's end (SIGKILL follows on_kill) rolls it back and frees the file."""


def _expire_history(conn: Connection, history: Table, day: date, history_days: int) -> None:
    """Delete the history's days more than ``history_days`` before the newest one."""
    newest = conn.execute(select(func.max(history.c.ds))).scalar() or day
    newest = date.fromisoformat(newest) if isinstance(newest, str) else newest
    conn.execute(delete(history).where(history.c.ds <= newest - timedelta(days=history_days)))
