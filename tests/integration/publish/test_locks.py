"""Readers never wait: on real servers (MariaDB for Aurora MySQL, PostgreSQL for Aurora PostgreSQL)
the publish never queues the application's point lookups, and a session that holds what the
publish needs makes it fail fast, named, with nothing changed."""

from __future__ import annotations

import threading
import time

import pytest
from mlbatch.backends.appdb import locks
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import create_engine, text

from tests.support.publish import (
    MODEL,
    Blocker,
    fabricate,
    history_rows,
    log_rows,
    run_day,
    table_rows,
    tables,
)


def published_day(env, spec) -> tuple[list, list]:
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 3000)), [0.21] * 3000))
    return table_rows(env), log_rows(env)


@pytest.mark.appdb(
    "mariadb"
)  # the exchange's metadata lock; PostgreSQL changes the history with DML (test_postgres.py)
def test_open_transaction_on_the_history_fails_the_exchange_fast_and_names_it(env, spec, mariadb_url, quick_give_up):
    before, before_log = published_day(env, spec)
    ctx = fabricate(env, spec, "2026-11-21", list(range(1000, 4000)), [0.27] * 3000, version="v2")
    predictions_gate(ctx)
    blocker = Blocker(mariadb_url, f"SELECT COUNT(*) FROM {MODEL}_history")
    try:
        started = time.monotonic()
        with pytest.raises(locks.LockWaitError) as failed:
            publish(ctx)
        elapsed = time.monotonic() - started
        message = str(failed.value)
        assert elapsed < 20, elapsed  # 2 tries of 1 s plus the load, not lock_wait_timeout's year
        assert "add partition p20261121: still blocked after 2 tries" in message
        assert f"session {blocker.id} (mlbatch@" in message and "transaction open" in message
        assert "Lock wait timeout exceeded" in message
        # Nothing changed: the latest table, the log, the history; no side table left.
        assert table_rows(env) == before and log_rows(env) == before_log
        assert {r[1] for r in history_rows(env)} == {"2026-11-20"}
        assert not {t for t in tables(env) if "__" in t}
    finally:
        blocker.close()
    assert publish(ctx)["rows"] == 3000  # the blocker gone, the retry publishes
    assert {r[1] for r in table_rows(env)} == {"2026-11-20", "2026-11-21"}


def test_row_lock_on_the_latest_table_fails_the_upsert_fast_and_changes_nothing(env, spec, quick_give_up):
    before, before_log = published_day(env, spec)
    ctx = fabricate(env, spec, "2026-11-21", list(range(1000, 4000)), [0.27] * 3000, version="v2")
    predictions_gate(ctx)
    blocker = Blocker(env.appdb_url, f"SELECT score FROM {MODEL}_predictions WHERE entity_key = 2500 FOR UPDATE")
    try:
        with pytest.raises(locks.LockWaitError) as failed:
            publish(ctx)
        message = str(failed.value)
        assert f"{MODEL}_predictions: upsert of 2026-11-21: still blocked" in message
        assert f"session {blocker.id} (mlbatch@" in message and "transaction open" in message
        assert table_rows(env) == before and log_rows(env) == before_log
        # MySQL exchanged the day's partition back; PostgreSQL rolled the history's day back with the rest.
        assert {r[1] for r in history_rows(env)} == {"2026-11-20"}
        assert not {t for t in tables(env) if "__" in t}
    finally:
        blocker.close()


def test_point_lookups_never_wait_during_a_publish_even_behind_a_long_transaction(env, spec):
    """A long read transaction on the table (the application's report, say) used to hold the swap's
    RENAME, and every new lookup queued behind the RENAME. Now the table only sees DML: the publish
    completes, lookups keep answering, and the open transaction still sees its snapshot."""
    published_day(env, spec)
    ctx = fabricate(env, spec, "2026-11-21", list(range(0, 60_000)), [0.27] * 60_000, version="v2")
    predictions_gate(ctx)
    report = Blocker(env.appdb_url, f"SELECT COUNT(*) FROM {MODEL}_predictions")
    latencies: list[float] = []
    done = threading.Event()

    def lookups() -> None:
        engine = create_engine(env.appdb_url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            key = 0
            while not done.is_set():
                key = (key + 7919) % 3000
                started = time.perf_counter()
                conn.execute(text(f"SELECT score FROM {MODEL}_predictions WHERE entity_key = :k"), {"k": key}).one()
                latencies.append(time.perf_counter() - started)
        engine.dispose()

    reader = threading.Thread(target=lookups)
    reader.start()
    try:
        publish(ctx)
        snapshot = report.conn.execute(text(f"SELECT COUNT(*) FROM {MODEL}_predictions")).scalar_one()
    finally:
        done.set()
        reader.join()
        report.close()
    assert snapshot == 3000  # the open transaction's snapshot: the day arrived whole, after it began
    assert len(table_rows(env)) == 60_000
    assert len(latencies) > 50
    # Loose: the machine is shared. A lookup queued on a metadata lock would wait for the whole publish.
    assert max(latencies) < 1.0, (max(latencies), sorted(latencies)[-5:])
