"""What the PostgreSQL publisher (Aurora PostgreSQL) does its own way, on a real PostgreSQL.

The promises every backend keeps run on both servers in test_mariadb.py and test_locks.py; here
the PostgreSQL path's own pieces: a stopped task cancels the COPY or the upsert and ends its
session, the model's advisory lock queues a second publish and gives up after its timeout, an
open read of the history never blocks the day (only an expired partition's DROP waits, and is
left to the next run), and what COPY refuses changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from mlbatch.backends.appdb import locks, postgres_publish
from mlbatch.backends.appdb.publisher import PublishError, PublishStopped
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.publish import (
    MODEL,
    Blocker,
    PublishTask,
    fabricate,
    history_partitions,
    history_rows,
    log_rows,
    run_day,
    table_rows,
    tables,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.appdb("postgresql")

TABLE = f"{MODEL}_predictions"
LOCK = f"mlb.pub.{TABLE}"


def other_statements(url: str, but: tuple[int, ...] = ()) -> list[str]:
    """The statements other sessions of this database (``but`` those) are running, or are idle
    in a transaction after."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND (state = 'active' OR xact_start IS NOT NULL)"
                )
            )
            return [str(r[1]) for r in rows if r[0] not in but]
    finally:
        engine.dispose()


def lock_is_free(url: str) -> bool:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            key = locks.advisory_key(LOCK)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            return bool(got)
    finally:
        engine.dispose()


def trickling_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The day's COPY text arrives 2 KiB every 0.1 s: the COPY runs for minutes."""
    real = postgres_publish.copy_chunks

    def slow(*args: Any, **kwargs: Any) -> Any:
        for chunk in real(*args, **kwargs):
            for at in range(0, chunk.size, 2048):
                yield chunk.slice(at, 2048)
                time.sleep(0.1)

    monkeypatch.setattr(postgres_publish, "copy_chunks", slow)


@pytest.mark.parametrize("slow", ["copy trickles in", "upsert waits for a locked row"])
def test_on_kill_stops_a_running_publish_and_frees_its_lock(env, spec, monkeypatch, slow):
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 20_000)), [0.21] * 20_000))
    before, before_log = table_rows(env), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(10_000, 30_000)), [0.27] * 20_000, version="v2")
    predictions_gate(ctx)
    blocker = None
    if slow == "copy trickles in":
        trickling_copy(monkeypatch)
        running = "COPY pg_temp"
    else:
        # An application session holds a row the day replaces: the upsert waits (and retries)
        # for about 12 s of short lock waits, a statement running in the server all along.
        blocker = Blocker(env.appdb_url, f"SELECT * FROM {TABLE} WHERE entity_key = 15000 FOR UPDATE")
        running = f'INSERT INTO "{TABLE}"'
    try:
        task = PublishTask(ctx, monkeypatch)
        wait_for(running, lambda: any(s.startswith(running) for s in other_statements(env.appdb_url)))
        started = time.monotonic()
        task.op.on_kill()
        assert time.monotonic() - started < 5, "on_kill must return before the supervisor's SIGKILL"
        wait_for("the publish to end", lambda: not task.thread.is_alive())
        assert isinstance(task.error, PublishStopped), task.error
        assert "stopped (on_kill)" in str(task.error)
        app = (blocker.id,) if blocker else ()
        wait_for("no statement of the publish left", lambda: not other_statements(env.appdb_url, but=app))
        assert lock_is_free(env.appdb_url)
        assert table_rows(env) == before and log_rows(env) == before_log  # nothing of the day is visible
    finally:
        if blocker is not None:
            blocker.close()
    monkeypatch.undo()
    assert run_day(ctx)["rows"] == 20_000  # the retry publishes the day
    assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 20_000), ("2026-11-21", 20_000)]


def test_a_second_publish_of_the_model_waits_for_the_advisory_lock_then_gives_up_named(env, spec, monkeypatch):
    ctx = fabricate(env, spec, "2026-11-20", list(range(0, 500)))
    predictions_gate(ctx)
    monkeypatch.setattr(locks, "MODEL_LOCK_WAIT_S", 1)
    holder = create_engine(env.appdb_url, poolclass=NullPool).connect()  # another publish of the model
    try:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": locks.advisory_key(LOCK)})
        started = time.monotonic()
        with pytest.raises(PublishError, match=rf"could not take the app DB lock '{LOCK}' .* within 1 s"):
            publish(ctx)
        assert 0.9 < time.monotonic() - started < 10
        assert f"{MODEL}_predictions" in tables(env) and table_rows(env) == [] and log_rows(env) == []
    finally:
        holder.close()  # the session ends: the server frees its lock
    assert publish(ctx)["rows"] == 500
    assert lock_is_free(env.appdb_url)  # the publish's own session gave the lock back


def test_an_open_read_of_the_history_never_blocks_the_day_only_the_expiry_waits(env, tmp_path, monkeypatch, caplog):
    """MySQL's exchange waits for a history reader (test_locks.py); here the day's history rows
    change with DML and never wait. Dropping an expired day's partition does wait (briefly), and
    is logged and left to the next run."""
    monkeypatch.setattr(locks, "LOCK_WAIT_S", 1)
    monkeypatch.setattr(locks, "ATTEMPTS", 2)
    monkeypatch.setattr(locks, "BACKOFF_S", 0.1)
    spec = write_spec(tmp_path, "publish: {history_days: 2}\n")
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 100)), [0.21] * 100))
    run_day(fabricate(env, spec, "2026-11-21", list(range(0, 100)), [0.27] * 100, version="v2"))
    reader = Blocker(env.appdb_url, f"SELECT COUNT(*) FROM {MODEL}_history")
    try:
        caplog.set_level(logging.WARNING, logger="mlbatch.backends.appdb")
        result = run_day(fabricate(env, spec, "2026-11-22", list(range(50, 150)), [0.24] * 100, version="v3"))
        assert result["path"] == "daily" and {r[1] for r in table_rows(env)} == {"2026-11-21", "2026-11-22"}
        assert any("expired history partitions: still blocked" in r.getMessage() for r in caplog.records)
        assert history_partitions(env) == ["2026-11-20", "2026-11-21", "2026-11-22"]  # 11-20 left for later
        # The reader's snapshot still has the two days it began with.
        assert reader.conn.execute(text(f"SELECT COUNT(*) FROM {MODEL}_history")).scalar() == 200
    finally:
        reader.close()
    run_day(fabricate(env, spec, "2026-11-23", list(range(0, 10)), [0.24] * 10, version="v4"))
    assert history_partitions(env) == ["2026-11-22", "2026-11-23"]


def test_a_key_twice_in_the_day_fails_named_and_changes_nothing(env, spec):
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 100))))
    before, before_history = table_rows(env), history_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", [*range(0, 100), 7])  # no prediction gate: the database's check
    with pytest.raises(PublishError, match=r"pubtest_history: the day 2026-11-21 of pubtest_predictions holds an"):
        publish(ctx)
    assert table_rows(env) == before and history_rows(env) == before_history
    assert [r[1] for r in log_rows(env)] == ["2026-11-20"]


def test_a_reader_error_mid_copy_surfaces_as_itself_and_changes_nothing(env, spec, monkeypatch):
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 3000))))
    before = table_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(0, 3000)), version="v2")
    real = postgres_publish.copy_chunks

    def broken(*args: Any, **kwargs: Any) -> Any:
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise OSError("shard 1 of 2 could not be read")

    monkeypatch.setattr(postgres_publish, "copy_chunks", broken)
    with pytest.raises(OSError, match="shard 1 of 2 could not be read"):
        publish(ctx)
    assert table_rows(env) == before and [r[1] for r in log_rows(env)] == ["2026-11-20"]
    assert lock_is_free(env.appdb_url)


def test_key_range_commit_and_sessions_publish_the_day_in_one_copy_and_one_transaction(env, tmp_path, caplog):
    """publish.sessions and publish.commit: key_range are MySQL's throughput options; a spec that
    sets them publishes on PostgreSQL as any other: one COPY, one transaction, its log row."""
    spec = write_spec(tmp_path, "publish: {commit: key_range, sessions: 3}\n")
    caplog.set_level(logging.INFO, logger="mlbatch.backends.appdb")
    assert run_day(fabricate(env, spec, "2026-11-20", list(range(900))))["rows"] == 900
    messages = [r.getMessage() for r in caplog.records]
    assert sum("COPY FROM STDIN took" in m for m in messages) == 1
    assert sum("guarded upsert took" in m for m in messages) == 1
    assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 900)]
