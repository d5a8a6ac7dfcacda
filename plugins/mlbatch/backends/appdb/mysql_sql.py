"""The MySQL / MariaDB / Aurora statements of the publish (text only: :mod:`mlbatch.backends.appdb.mysql_publish`
runs them; :mod:`mlbatch.reporting.statements` prints them for review).

``VALUES(col)`` rather than the 8.0.19 ``AS new`` alias, and LIST COLUMNS partitions: both run on
Aurora MySQL 3 (8.0) and on MariaDB 10.11, the stand-in the tests run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date, timedelta

from sqlalchemy import MetaData, Table
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateTable

from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.locks import MODEL_LOCK_WAIT_S
from mlbatch.backends.appdb.publisher import COLUMNS, UPDATE

LOCK_TIMEOUT_S = MODEL_LOCK_WAIT_S  # GET_LOCK's wait: PostgreSQL's advisory lock waits as long


def q(name: str) -> str:
    """A MySQL identifier, quoted (names come from validated specs; quoting is belt and braces)."""
    return "`" + name.replace("`", "``") + "`"


def side_name(table: str, suffix: str) -> str:
    """``<table>__<suffix>`` within MySQL's 64-character limit (a hash keeps long names distinct)."""
    name = f"{table}__{suffix}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[:48]}_{digest}__{suffix}"[:64]


def load_data_sql(table: str, columns: Sequence[str] = COLUMNS, *, s3_uri: str | None = None) -> str:
    """``LOAD DATA`` of our TSV into ``table``: LOCAL (file name bound as ``%s``) or Aurora's FROM S3."""
    cols = ", ".join(q(c) for c in columns)
    if s3_uri is None:
        source = "LOCAL INFILE %s"
    else:
        if not s3_uri.startswith("s3://") or "'" in s3_uri or "\\" in s3_uri:
            raise ValueError(f"LOAD DATA FROM S3 needs a plain s3:// URI, got {s3_uri!r}")
        source = f"FROM S3 FILE '{s3_uri}'"
    return f"LOAD DATA {source} INTO TABLE {q(table)} CHARACTER SET utf8mb4 ({cols})"


def history_ddl(history: Table) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the history table, partitioned by day (LIST COLUMNS: a
    day's partition can be added in any order, so a backfill needs no reorganisation). A table
    needs one partition to exist: an empty one for a day no run has."""
    create = str(CreateTable(history).compile(dialect=mysql.dialect())).strip()
    create = create.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)
    return f"{create} PARTITION BY LIST COLUMNS({q('ds')}) (PARTITION {q(EMPTY_PARTITION)} VALUES IN ('1000-01-01'))"


def staging_ddl(history: Table, stage: str) -> str:
    """The staging table: the history's columns and primary key, unpartitioned (what ``EXCHANGE
    PARTITION`` requires), in one statement (``CREATE TABLE ... LIKE`` + ``REMOVE PARTITIONING``
    rebuilt the empty table: up to a second on a busy server)."""
    shaped = history.to_metadata(MetaData(), name=stage)
    return str(CreateTable(shaped).compile(dialect=mysql.dialect())).strip()


EMPTY_PARTITION = "p_none"


def partition_name(day: date) -> str:
    return f"p{day:%Y%m%d}"


def partition_day(partition: str) -> date:
    """The day of a day's partition (the inverse of :func:`partition_name`)."""
    return date(int(partition[1:5]), int(partition[5:7]), int(partition[7:9]))


def add_partition_sql(history: str, day: date) -> str:
    part = q(partition_name(day))
    return f"ALTER TABLE {q(history)} ADD PARTITION (PARTITION {part} VALUES IN ('{day.isoformat()}'))"


def exchange_sql(history: str, day: date, stage: str, *, validate: bool = True) -> str:
    """Swap the staging table in as the day's partition. MySQL 8 (Aurora MySQL 3) can skip the
    check that every row belongs in the partition (a scan of the day: 1M rows took about a second
    here): every staged row has ``ds`` = the day because the TSV writer sets it. MariaDB 10.11
    always validates (``WITHOUT VALIDATION`` arrived in 11.4)."""
    sql = f"ALTER TABLE {q(history)} EXCHANGE PARTITION {q(partition_name(day))} WITH TABLE {q(stage)}"
    return sql if validate else f"{sql} WITHOUT VALIDATION"


def guarded_upsert_sql(
    table: str, source: str, *, day: bool = False, key_from: bool = False, key_to: bool = False
) -> str:
    """Upsert every row of ``source`` into ``table``; a row is replaced only by the same or a newer ds.

    ``day``: only the source's rows of ``ds = %(ds)s`` (one partition of the history);
    ``key_from`` / ``key_to``: only ``%(key_from)s <= key < %(key_to)s`` (one key range).
    ``VALUES(col)`` (not the 8.0.19 ``AS new`` alias) runs on MySQL 8.0 and MariaDB 10.11. MySQL
    applies the assignments left to right, so ``ds`` goes last: the others compare the old ds.
    """
    cols = ", ".join(q(c) for c in COLUMNS)
    t, s = q(table), q(source)
    where = (
        ([f"{s}.{q('ds')} = %(ds)s"] if day else [])
        + ([f"{s}.{q('entity_key')} >= %(key_from)s"] if key_from else [])
        + ([f"{s}.{q('entity_key')} < %(key_to)s"] if key_to else [])
    )
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {s}{clause} ON DUPLICATE KEY UPDATE {_guarded_sets(table)}"


def _guarded_sets(table: str) -> str:
    """The upsert's assignments: each column takes the new value only if its day is the same or newer."""
    t = q(table)
    fresh = f"VALUES({q('ds')}) >= {t}.{q('ds')}"
    return ", ".join(f"{t}.{q(c)} = IF({fresh}, VALUES({q(c)}), {t}.{q(c)})" for c in UPDATE)


def latest_sql(history: str, base: str) -> str:
    """``publish.mode: partitioned``: an entity's prediction (bound as ``%(key)s``), the newer of its
    newest day in the history and its row in the base. Each side is a primary-key lookup: the
    history's probes one index per kept day (its partitions), the base's one."""
    cols = ", ".join(q(c) for c in COLUMNS)
    return (
        f"SELECT {cols} FROM ("
        f"(SELECT {cols} FROM {q(history)} WHERE {q('entity_key')} = %(key)s ORDER BY {q('ds')} DESC LIMIT 1) "
        f"UNION ALL (SELECT {cols} FROM {q(base)} WHERE {q('entity_key')} = %(key)s)"
        f") {q('latest')} ORDER BY {q('ds')} DESC LIMIT 1"
    )


def compact_sql(base: str, history: str, *, next_day: bool) -> str:
    """Move an expiring day (``%(ds)s``, one partition of the history) into the base, before its
    partition is dropped: its rows whose entity the next kept day (``%(next_ds)s``) did not
    re-score, upserted guarded (an older day never replaces a newer).

    Why only the next day is checked: a row kept in the base although a later day re-scored its
    entity is harmless (readers take the newer), and that one probe, pruned to one partition,
    keeps the steady state (every entity scored daily) at zero rows written. ``next_day`` False:
    no later day is kept, every row moves."""
    cols = ", ".join(q(c) for c in COLUMNS)
    h, b = q(history), q(base)
    newer = (
        f" AND NOT EXISTS (SELECT 1 FROM {h} {q('n')} WHERE {q('n')}.{q('entity_key')} = {q('d')}.{q('entity_key')}"
        f" AND {q('n')}.{q('ds')} = %(next_ds)s)"
        if next_day
        else ""
    )
    picked = ", ".join(f"{q('d')}.{q(c)}" for c in COLUMNS)
    return (
        f"INSERT INTO {b} ({cols}) SELECT {picked} FROM {h} {q('d')} "
        f"WHERE {q('d')}.{q('ds')} = %(ds)s{newer} ON DUPLICATE KEY UPDATE {_guarded_sets(base)}"
    )


def log_upsert_sql(log_table: str) -> str:
    cols = [c.name for c in schema.publish_log.columns]
    values = ", ".join(f"%({c})s" for c in cols)
    sets = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in cols if c not in ("model", "ds"))
    return (
        f"INSERT INTO {q(log_table)} ({', '.join(q(c) for c in cols)}) VALUES ({values}) ON DUPLICATE KEY UPDATE {sets}"
    )


def model_lock(table: str) -> str:
    return "mlb.pub." + hashlib.sha256(table.encode()).hexdigest()[:16] if len(table) > 56 else f"mlb.pub.{table}"


def expired_partitions(names: Iterable[str], newest: date, history_days: int) -> list[str]:
    """The day partitions older than ``history_days`` days before ``newest`` (kept: newest and
    the ``history_days - 1`` days before it)."""
    cutoff = partition_name(newest - timedelta(days=history_days - 1))
    return sorted(n for n in names if n != EMPTY_PARTITION and len(n) == 9 and n < cutoff)
