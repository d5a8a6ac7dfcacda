"""``publish.commit: key_range`` on a real MariaDB: each session upserts and commits its own key
range (the path for days of hundreds of millions of rows); the tables end as with one
transaction, and a range that fails leaves the others committed, no log row, and a rerun that
completes the day."""

from __future__ import annotations

import pytest
from mlbatch.backends.appdb.publisher import PublishError
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate

from tests.support.publish import (
    Blocker,
    aurora_env,
    fabricate,
    history_rows,
    log_rows,
    run_day,
    table_rows,
    write_spec,
)

# publish.commit: key_range is MySQL's (PostgreSQL commits the day in one transaction).
pytestmark = pytest.mark.appdb("mariadb")


KEY_RANGES = "publish: {commit: key_range, sessions: 3}\n"


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path, KEY_RANGES)


def test_each_session_commits_its_range_and_the_tables_end_as_with_one_transaction(env, spec, caplog):
    run_day(fabricate(env, spec, "2026-11-20", list(range(900)), [0.21] * 900))
    day = [k for k in range(60, 840) if k % 5] + [1500, 1501]
    caplog.set_level("INFO", logger="mlbatch.backends.appdb")
    caplog.clear()
    assert run_day(fabricate(env, spec, "2026-11-21", day, [0.27] * len(day), version="v2"))["path"] == "daily"
    own = [r.getMessage() for r in caplog.records if "own transaction took" in r.getMessage()]
    assert len(own) == 3, own  # three sessions, three transactions
    rows = {r[0]: r[1:3] for r in table_rows(env)}
    assert sorted(rows) == sorted(set(range(900)) | {1500, 1501})
    assert {k for k, v in rows.items() if v == ("2026-11-21", "v2")} == set(day)
    assert {k for k, v in rows.items() if v == ("2026-11-20", "v1")} == set(range(900)) - set(day)
    assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 900), ("2026-11-21", len(day))]
    # A backfill of an older day still never replaces a newer row, range by range.
    old = list(range(0, 900, 2))
    assert run_day(fabricate(env, spec, "2026-11-19", old, [0.23] * len(old), version="v0"))["path"] == "backfill"
    assert {r[0]: r[1:3] for r in table_rows(env)} == rows


def test_a_failed_range_leaves_the_others_committed_and_the_rerun_completes_the_day(
    env, spec, mariadb_url, quick_give_up
):
    run_day(fabricate(env, spec, "2026-11-20", list(range(3000)), [0.21] * 3000))
    keys = list(range(1000, 4000))
    ctx = fabricate(env, spec, "2026-11-21", keys, [0.27] * len(keys), version="v2")
    predictions_gate(ctx)
    # The application holds the row of key 2990, in the last of the three ranges, and waits.
    blocker = Blocker(mariadb_url, "SELECT score FROM pubtest_predictions WHERE entity_key = 2990 FOR UPDATE")
    try:
        with pytest.raises(PublishError) as failed:
            publish(ctx)
    finally:
        blocker.close()
    message = str(failed.value)
    assert "failed in 1 of 3 key ranges" in message and "rerun the publish" in message
    assert f"session {blocker.id} (mlbatch@" in message  # the blocking session, named
    rows = {r[0]: r[1] for r in table_rows(env)}
    new = {k for k, ds in rows.items() if ds == "2026-11-21"}
    assert new and new < set(keys) and 2990 not in new  # some ranges visible, the blocked one not
    assert [r[1] for r in log_rows(env)] == ["2026-11-20"]  # no log row: the export gate cannot pass
    assert len([r for r in history_rows(env) if r[1] == "2026-11-21"]) == len(keys)

    publish(ctx)  # the rerun
    rows = {r[0]: r[1] for r in table_rows(env)}
    assert len(rows) == 4000 and {k for k, ds in rows.items() if ds == "2026-11-21"} == set(keys)
    assert [r[1] for r in log_rows(env)] == ["2026-11-20", "2026-11-21"]


def test_aurora_loading_from_s3_commits_by_key_range_too(tmp_path, mariadb_url, s3_env, monkeypatch, caplog):
    """The production load (LOAD DATA FROM S3) stages one object per session and keeps the
    spec's commit: three ranges, three loads, three transactions."""
    env, loaded_from = aurora_env(tmp_path, mariadb_url, monkeypatch, "mlbatch-key-range-s3")
    spec = write_spec(tmp_path, KEY_RANGES)
    try:
        run_day(fabricate(env, spec, "2026-11-20", list(range(900)), [0.21] * 900))
        caplog.set_level("INFO", logger="mlbatch.backends.appdb")
        caplog.clear()
        day = list(range(300, 1200))
        assert run_day(fabricate(env, spec, "2026-11-21", day, [0.27] * len(day), version="v2"))["path"] == "daily"
        own = [r.getMessage() for r in caplog.records if "own transaction took" in r.getMessage()]
        assert len(own) == 3, own
        assert len(loaded_from) == 6  # two days, three key ranges each
        rows = {r[0]: r[1:3] for r in table_rows(env)}
        assert {k for k, v in rows.items() if v == ("2026-11-21", "v2")} == set(day)
        assert {k for k, v in rows.items() if v == ("2026-11-20", "v1")} == set(range(300))
        assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 900), ("2026-11-21", len(day))]
        assert env.store.list("publish/") == []
    finally:
        env.appdb.dispose()
