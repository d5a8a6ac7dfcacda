"""Publish on real servers: MariaDB 10.11 (Aurora MySQL's stand-in: bulk load, partition exchange,
guarded upsert) and PostgreSQL (Aurora PostgreSQL's: COPY, one transaction); kills, readers.

Every test that takes ``env`` runs on both (``appdb_url``); those about MySQL's own path (load
sessions, the exchange, LOAD DATA FROM S3) are marked for MariaDB.
"""

from __future__ import annotations

import threading

import pytest
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import create_engine, inspect, text

from tests.support.publish import (
    KILL_POINTS,
    MODEL,
    aurora_env,
    backfill_keeps_newer_rows,
    fabricate,
    history_by_day_with_retention,
    history_partitions,
    history_rows,
    idempotent_rerun,
    log_rows,
    make_env,
    newer_day_replaces_rows,
    run_day,
    run_killed,
    table_rows,
    tables,
    write_spec,
)


def test_idempotent_rerun(env, spec):
    idempotent_rerun(env, spec)
    from mlbatch.backends.appdb import schema

    shared = {table.name for table in schema.metadata.sorted_tables}
    assert tables(env) == shared | {f"{MODEL}_predictions", f"{MODEL}_history"}  # no side tables left


def test_backfill_keeps_newer_rows(env, spec):
    assert backfill_keeps_newer_rows(env, spec)["path"] == "backfill"


def test_newer_day_replaces_rows(env, spec):
    assert newer_day_replaces_rows(env, spec)["path"] == "daily"
    # The history answers by-day questions: no index but the primary key to maintain.
    assert inspect(env.appdb.engine).get_indexes(f"{MODEL}_predictions") == []
    assert history_partitions(env) == ["2026-11-20", "2026-11-21"]  # one partition per published day


def test_history_by_day_with_retention(env, tmp_path):
    history_by_day_with_retention(env, tmp_path)


def test_reader_sees_the_old_day_or_the_new_never_a_mix(env, spec):
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 3000)), [0.21] * 3000))
    ctx = fabricate(env, spec, "2026-11-21", list(range(1000, 5000)), [0.27] * 4000)
    predictions_gate(ctx)
    seen: set[tuple] = set()
    done = threading.Event()

    def read() -> None:
        engine = create_engine(env.appdb_url)
        with engine.connect() as conn:
            while not done.is_set():
                seen.add(
                    tuple(
                        conn.execute(
                            text(f"SELECT ds, count(*) FROM {MODEL}_predictions GROUP BY ds ORDER BY ds")
                        ).fetchall()
                    )
                )
                conn.rollback()
        engine.dispose()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        publish(ctx)
    finally:
        done.set()
        reader.join()
    old = ((__import__("datetime").date(2026, 11, 20), 3000),)
    new = ((__import__("datetime").date(2026, 11, 20), 1000), (__import__("datetime").date(2026, 11, 21), 4000))
    assert seen and seen <= {old, new}, seen


@pytest.mark.appdb("mariadb")  # MySQL's LOAD DATA sessions, one per key range
def test_parallel_sessions_keep_every_key_the_day_lacks_in_every_range(env, spec, caplog):
    """Integer keys load in LOAD_SESSIONS key ranges; each session copies its own range's old rows."""
    from mlbatch.backends.appdb.mysql_publish import LOAD_SESSIONS

    assert LOAD_SESSIONS >= 2
    run_day(fabricate(env, spec, "2026-11-20", list(range(600)), [0.21] * 600))
    # The next day lacks keys below, inside and above its own range, in every session's range.
    day = [k for k in range(50, 550) if k % 7] + [900, 901]
    caplog.set_level("INFO", logger="mlbatch.backends.appdb")
    caplog.clear()  # only the second day's loads
    assert run_day(fabricate(env, spec, "2026-11-21", day, [0.27] * len(day), version="v2"))["path"] == "daily"
    loads = [r.getMessage() for r in caplog.records if "_history__stage: LOAD DATA keys [" in r.getMessage()]
    assert len(loads) == LOAD_SESSIONS, loads
    rows = {r[0]: r[1:3] for r in table_rows(env)}
    assert sorted(rows) == sorted(set(range(600)) | {900, 901})
    assert {k for k, v in rows.items() if v == ("2026-11-21", "v2")} == set(day)
    assert {k for k, v in rows.items() if v == ("2026-11-20", "v1")} == set(range(600)) - set(day)
    assert log_rows(env)[-1][3] == len(day)


def test_awkward_text_survives_the_tsv(env, spec):
    spec = spec.model_copy(update={"entity": spec.entity.model_copy(update={"type": "string"})})
    keys = ["a\tb", "line\nbreak", "cr\rhere", "back\\slash", "\\N", "NULL", "é ü 漢字 🙂", "x" * 255]
    scores = [0.1, 1e-7, 1 / 3, 0.123456789012345678, 0.0, 1.0, 0.5, 2.5e-5]
    run_day(fabricate(env, spec, "2026-11-20", keys, scores, version="v\\1\t\\N"))
    got = {r[0]: (r[2], r[4]) for r in table_rows(env)}
    # Text through LOAD DATA's (MySQL) or COPY's (PostgreSQL) escapes; scores compared to 6 digits.
    assert got == {k: ("v\\1\t\\N", pytest.approx(s, rel=1e-5)) for k, s in zip(keys, scores, strict=True)}


def test_published_checksum_equals_the_embedded_one(env, spec, tmp_path):
    """The checksum comes from the parquet rows, not the database: the same day gives the same value."""
    keys = list(range(2000))
    run_day(fabricate(env, spec, "2026-11-20", keys))
    lite = make_env(tmp_path / "lite")
    run_day(fabricate(lite, spec, "2026-11-20", keys))
    assert log_rows(env)[0][4] == log_rows(lite)[0][4]


@pytest.mark.parametrize(
    ("newer_exists", "point"),
    [(False, "loaded"), (False, "in_transaction"), (True, "loaded"), (True, "in_transaction")],
    ids=["daily-after-load", "daily-in-transaction", "backfill-after-load", "backfill-in-transaction"],
)
def test_killed_publish_leaves_tables_as_they_were(env, spec, tmp_path, newer_exists, point):
    _killed_publish_leaves_tables_as_they_were(env, spec, tmp_path, newer_exists, point)


@pytest.mark.appdb("mariadb")  # the exchange is MySQL's step; PostgreSQL changes the history in the transaction
def test_killed_publish_after_the_exchange_leaves_tables_as_they_were(env, spec, tmp_path):
    _killed_publish_leaves_tables_as_they_were(env, spec, tmp_path, False, "exchanged")


def _killed_publish_leaves_tables_as_they_were(env, spec, tmp_path, newer_exists: bool, point: str) -> None:
    assert point in KILL_POINTS[env.appdb.dialect], (point, env.appdb.dialect)
    run_day(fabricate(env, spec, "2026-11-21", list(range(0, 2000)), [0.21] * 2000))
    before, before_log = table_rows(env), log_rows(env)
    ds = "2026-11-20" if newer_exists else "2026-11-22"
    ctx = fabricate(env, spec, ds, list(range(1000, 3000)), [0.27] * 2000, version="v2")
    predictions_gate(ctx)
    run_killed(tmp_path, env, ctx, point)
    assert table_rows(env) == before
    assert log_rows(env) == before_log
    result = publish(ctx)  # the retry waits for the server to free the dead session's lock, then succeeds
    assert result["path"] == ("backfill" if newer_exists else "daily")
    rows = {r[0]: r[1] for r in table_rows(env)}
    assert len(rows) == 3000 and rows[2999] == ds
    assert [r[1] for r in log_rows(env)] == sorted(["2026-11-21", ds])
    assert not {t for t in tables(env) if "__" in t}


@pytest.mark.appdb("mariadb")  # the exchange is MySQL's step; PostgreSQL changes the history in the transaction
def test_killed_after_exchange_leaves_a_history_day_the_rerun_replaces(env, spec, tmp_path):
    run_day(fabricate(env, spec, "2026-11-21", list(range(0, 2000)), [0.21] * 2000))
    before, before_log = table_rows(env), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-22", list(range(1000, 3000)), [0.27] * 2000, version="v2")
    predictions_gate(ctx)
    run_killed(tmp_path, env, ctx, "exchanged")
    assert table_rows(env) == before and log_rows(env) == before_log  # nothing the readers read changed
    assert len([r for r in history_rows(env) if r[1] == "2026-11-22"]) == 2000  # the unlogged day, replaced below
    publish(ctx)
    assert not {t for t in tables(env) if "__" in t}
    assert len(history_rows(env)) == 4000
    rows = {r[0]: r[1] for r in table_rows(env)}
    assert len(rows) == 3000 and rows[0] == "2026-11-21" and rows[2999] == "2026-11-22"


def test_aurora_load_from_s3_stages_the_day_in_the_object_store(tmp_path, mariadb_url, s3_env, monkeypatch):
    """MLBATCH_AURORA_LOAD_FROM_S3=1: the day's key ranges go to the object store (one TSV per
    load session), the loads read them from there, and the staged objects are gone afterwards."""
    env, loaded_from = aurora_env(tmp_path, mariadb_url, monkeypatch, "mlbatch-publish-s3")
    spec = write_spec(tmp_path)
    try:
        run_day(fabricate(env, spec, "2026-11-20", list(range(0, 3000)), [0.21] * 3000))
        assert run_day(fabricate(env, spec, "2026-11-21", list(range(1000, 4000)), [0.27] * 3000))["path"] == "daily"
        # Two days of two key ranges each (publish.sessions defaults to 2), one object per range.
        names = sorted(u.rsplit("/", 1)[1] for u in loaded_from)
        assert names == ["predictions-000.tsv"] * 2 + ["predictions-001.tsv"] * 2
        assert all(u.startswith("s3://mlbatch-publish-s3/root/publish/pubtest/2026-11-2") for u in loaded_from)
        assert env.store.list("publish/") == []  # the staged TSVs are deleted
        rows = {r[0]: r[1] for r in table_rows(env)}
        assert len(rows) == 4000 and rows[0] == "2026-11-20" and rows[3999] == "2026-11-21"
        assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 3000), ("2026-11-21", 3000)]
    finally:
        env.appdb.dispose()
