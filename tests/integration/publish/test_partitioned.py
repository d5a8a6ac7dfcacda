"""``publish.mode: partitioned`` on MariaDB: one write per row. The day is loaded and exchanged in
as its partition of ``<model>_history``; readers take an entity's newest row from the history and
``<model>_base`` (:func:`mlbatch.backends.appdb.mysql_sql.latest_sql`). Retention moves an expiring
day's last predictions into the base; a backfill older than the history keeps goes there too;
kills, reruns and a long reader transaction against the exchange."""

from __future__ import annotations

import threading

import pytest
from mlbatch.backends.appdb import mysql_sql
from mlbatch.backends.appdb.locks import LockWaitError
from mlbatch.backends.appdb.publisher import PublishError
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import text

from tests.support.publish import (
    MODEL,
    fabricate,
    history_partitions,
    log_rows,
    make_env,
    run_day,
    run_killed,
    table_rows,
    tables,
    write_spec,
)

pytestmark = pytest.mark.appdb("mariadb")
PARTITIONED = "publish: {mode: partitioned}\n"


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path, PARTITIONED)


def latest(env, keys) -> dict:
    """Each key's prediction as the application reads it: (ds, version, score), or None."""
    sql = mysql_sql.latest_sql(f"{MODEL}_history", f"{MODEL}_base")
    found = {}
    with env.appdb.connect() as conn:
        for key in keys:
            row = conn.exec_driver_sql(sql, {"key": key}).first()
            found[key] = None if row is None else (str(row.ds), row.model_version, row.score)
    return found


def base_rows(env) -> dict:
    with env.appdb.connect() as conn:
        return {r[0]: str(r[1]) for r in conn.execute(text(f"SELECT entity_key, ds FROM {MODEL}_base"))}


def test_days_are_read_newest_per_entity_and_written_once(env, spec):
    assert run_day(fabricate(env, spec, "2026-11-21", list(range(0, 2000)), [0.21] * 2000))["path"] == "daily"
    newer = fabricate(env, spec, "2026-11-22", list(range(1000, 3000)), [0.27] * 2000, version="v2")
    assert run_day(newer)["path"] == "daily"
    backfill = fabricate(env, spec, "2026-11-20", list(range(0, 3500)), [0.2] * 3500, version="v0")
    assert run_day(backfill)["path"] == "backfill"
    got = latest(env, [0, 999, 1000, 2999, 3000, 3499, 3500])
    assert got == {
        0: ("2026-11-21", "v1", 0.21),  # the backfill never hides a newer day
        999: ("2026-11-21", "v1", 0.21),
        1000: ("2026-11-22", "v2", 0.27),
        2999: ("2026-11-22", "v2", 0.27),
        3000: ("2026-11-20", "v0", 0.2),  # only the backfill scored it
        3499: ("2026-11-20", "v0", 0.2),
        3500: None,
    }
    assert table_rows(env) == []  # nothing upserted: the history is what readers read
    assert history_partitions(env) == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 3500), ("2026-11-21", 2000), ("2026-11-22", 2000)]
    assert base_rows(env) == {}


def test_rerun_replaces_the_day_and_leaves_no_side_tables(env, spec):
    ctx = fabricate(env, spec, "2026-11-20", list(range(500)))
    run_day(ctx)
    first, first_log = latest(env, range(500)), log_rows(env)
    run_day(ctx)
    assert latest(env, range(500)) == first and first[0][0] == "2026-11-20"
    assert [r[:5] for r in log_rows(env)] == [r[:5] for r in first_log]
    with env.appdb.connect() as conn:
        assert conn.execute(text(f"SELECT COUNT(*) FROM {MODEL}_history")).scalar() == 500
    assert not {t for t in tables(env) if "__" in t}


def test_retention_moves_each_expiring_days_last_predictions_into_the_base(env, tmp_path):
    spec = write_spec(tmp_path, "publish: {mode: partitioned, history_days: 2}\n")
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 100)), [0.21] * 100))
    run_day(fabricate(env, spec, "2026-11-21", list(range(50, 150)), [0.27] * 100, version="v2"))
    run_day(fabricate(env, spec, "2026-11-22", list(range(100, 200)), [0.24] * 100, version="v3"))
    # 11-20 expired: only its entities the next day did not re-score moved (0..49).
    assert history_partitions(env) == ["2026-11-21", "2026-11-22"]
    assert base_rows(env) == {k: "2026-11-20" for k in range(50)}
    got = latest(env, [0, 49, 50, 99, 100, 199, 200])
    assert got == {
        0: ("2026-11-20", "v1", 0.21),
        49: ("2026-11-20", "v1", 0.21),
        50: ("2026-11-21", "v2", 0.27),
        99: ("2026-11-21", "v2", 0.27),
        100: ("2026-11-22", "v3", 0.24),
        199: ("2026-11-22", "v3", 0.24),
        200: None,
    }
    # Every entity scored daily: an expiring day moves nothing.
    run_day(fabricate(env, spec, "2026-11-23", list(range(0, 10)), [0.25] * 10, version="v4"))
    assert history_partitions(env) == ["2026-11-22", "2026-11-23"]
    assert base_rows(env) == {
        **{k: "2026-11-21" for k in range(50, 100)},
        **{k: "2026-11-20" for k in range(10, 50)},
        **{k: "2026-11-20" for k in range(10)},
    }
    assert latest(env, [5, 75, 120]) == {
        5: ("2026-11-23", "v4", 0.25),
        75: ("2026-11-21", "v2", 0.27),
        120: ("2026-11-22", "v3", 0.24),
    }
    # A backfill older than the history keeps goes into the base, guarded: it never hides a newer day.
    old = fabricate(env, spec, "2026-11-19", [0, 60, 500], [0.22] * 3, version="v0")
    assert run_day(old)["path"] == "backfill"
    assert history_partitions(env) == ["2026-11-22", "2026-11-23"]
    assert latest(env, [0, 60, 500]) == {
        0: ("2026-11-23", "v4", 0.25),
        60: ("2026-11-21", "v2", 0.27),
        500: ("2026-11-19", "v0", 0.22),
    }
    assert "2026-11-19" in [r[1] for r in log_rows(env)]


def test_switching_from_upsert_seeds_the_base_and_back_is_refused(env, tmp_path):
    upsert = write_spec(tmp_path)
    run_day(fabricate(env, upsert, "2026-11-20", list(range(0, 100)), [0.21] * 100))
    partitioned = write_spec(tmp_path, PARTITIONED)
    run_day(fabricate(env, partitioned, "2026-11-21", list(range(50, 150)), [0.27] * 100, version="v2"))
    assert base_rows(env) == {k: "2026-11-20" for k in range(100)}  # every entity of <model>_predictions
    assert latest(env, [0, 50, 149]) == {
        0: ("2026-11-20", "v1", 0.21),
        50: ("2026-11-21", "v2", 0.27),
        149: ("2026-11-21", "v2", 0.27),
    }
    before = table_rows(env)
    with pytest.raises(PublishError, match=rf"{MODEL}_base exists.*publish.mode: partitioned"):
        run_day(fabricate(env, write_spec(tmp_path), "2026-11-22", [1, 2], [0.22, 0.23], version="v3"))
    assert table_rows(env) == before and "2026-11-22" not in [r[1] for r in log_rows(env)]


@pytest.mark.parametrize("point", ["loaded", "exchanged"])
def test_killed_publish_then_rerun(env, spec, tmp_path, point):
    """Killed before the exchange: nothing visible. Killed after it: the day is visible without
    its log row (the export gate cannot pass); the rerun replaces the day and writes the row."""
    run_day(fabricate(env, spec, "2026-11-21", list(range(0, 2000)), [0.21] * 2000))
    keys = [0, 1500, 2999]
    before, before_log = latest(env, keys), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-22", list(range(1000, 3000)), [0.27] * 2000, version="v2")
    predictions_gate(ctx)
    run_killed(tmp_path, env, ctx, point)
    assert log_rows(env) == before_log
    if point == "loaded":
        assert latest(env, keys) == before
    else:
        assert latest(env, keys)[2999] == ("2026-11-22", "v2", 0.27)
    assert publish(ctx)["path"] == "daily"
    assert latest(env, keys) == {
        0: ("2026-11-21", "v1", 0.21),
        1500: ("2026-11-22", "v2", 0.27),
        2999: ("2026-11-22", "v2", 0.27),
    }
    assert [r[1] for r in log_rows(env)] == ["2026-11-21", "2026-11-22"]
    assert not {t for t in tables(env) if "__" in t}


def test_a_long_reader_transaction_blocks_the_exchange_which_gives_up_naming_it(env, spec, quick_give_up):
    """The trade-off of reading the partitioned table: a reader's open transaction holds a
    metadata lock the exchange must wait for. The publish waits a bounded time, then fails
    naming the reader, with nothing changed; once the reader ends, the rerun publishes."""
    run_day(fabricate(env, spec, "2026-11-21", list(range(0, 200)), [0.21] * 200))
    ctx = fabricate(env, spec, "2026-11-22", list(range(100, 300)), [0.27] * 200, version="v2")
    predictions_gate(ctx)
    held, release = threading.Event(), threading.Event()

    def long_reader() -> None:
        with env.appdb.engine.connect() as conn:
            conn.exec_driver_sql(mysql_sql.latest_sql(f"{MODEL}_history", f"{MODEL}_base"), {"key": 150}).all()
            held.set()  # the transaction stays open, as a report's would
            release.wait(60)
            conn.rollback()

    reader = threading.Thread(target=long_reader)
    reader.start()
    try:
        assert held.wait(10)
        with pytest.raises(
            LockWaitError, match=r"(add|exchange) partition p20261122: still blocked.*Blocking: session"
        ):
            publish(ctx)
        assert latest(env, [150])[150] == ("2026-11-21", "v1", 0.21)
        assert [r[1] for r in log_rows(env)] == ["2026-11-21"]
    finally:
        release.set()
        reader.join()
    publish(ctx)
    assert latest(env, [150])[150] == ("2026-11-22", "v2", 0.27)


@pytest.mark.appdb("postgresql")
def test_postgres_refuses_the_partitioned_mode_by_name(env, spec):
    ctx = fabricate(env, spec, "2026-11-21", [1, 2], [0.2, 0.21])
    with pytest.raises(PublishError, match=r"publish.mode: partitioned needs Aurora MySQL.*PostgreSQL"):
        run_day(ctx)
    assert not {t for t in tables(env) if t.startswith(MODEL)}  # refused before any table was made


def test_sqlite_refuses_the_partitioned_mode_by_name(tmp_path, spec):
    env = make_env(tmp_path)
    with pytest.raises(PublishError, match=r"publish.mode: partitioned needs Aurora MySQL.*SQLite"):
        run_day(fabricate(env, spec, "2026-11-21", [1, 2], [0.2, 0.21]))
