"""LOAD DATA through named pipes (pipes.piped_sources, as the publish uses them): the load overlaps the
writer, errors surface."""

from datetime import date, datetime

import pyarrow as pa
import pytest
from mlbatch.backends.appdb import schema
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.backends.appdb.mysql_publish import publish_mysql
from mlbatch.backends.appdb.pipes import piped_sources
from mlbatch.backends.appdb.tsv import tsv_chunk
from sqlalchemy import text

DAY = date(2026, 11, 22)


def _rows(start: int, n: int) -> bytes:
    keys = pa.array(range(start, start + n), pa.int64())
    cols = [
        keys,
        pa.repeat(pa.scalar(DAY.isoformat()), n),
        pa.repeat(pa.scalar("v1"), n),
        pa.repeat(pa.scalar("male"), n),
        pa.array([0.5] * n, pa.float64()),
    ]
    return tsv_chunk(cols).to_pybytes()


def _log(rows: int) -> dict:
    return {
        "model": "m",
        "ds": DAY,
        "model_version": "v1",
        "rows_published": rows,
        "checksum": "0" * 64,
        "run_id": "r",
        "published_at": datetime(2026, 11, 22, 6),
    }


def _setup(url: str):
    db = AppDbHook(url)
    db.ensure_schema([("m", "integer")])
    return db, schema.predictions_table("m", "integer")


def _count(db: AppDbHook) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM m_predictions")).scalar()


def test_piped_load_publishes_what_the_writer_streams(mariadb_url):
    db, table = _setup(mariadb_url)
    chunks = [_rows(i * 10_000, 10_000) for i in range(5)]

    def write(out):
        for c in chunks:
            out.write(c)

    with piped_sources([write]) as (sources, finish):
        path = publish_mysql(db, table, sources, 50_000, lambda: (finish(), _log(50_000))[1], day=DAY)
    assert path == "daily" and _count(db) == 50_000
    db.dispose()


def test_a_writer_error_surfaces_as_itself_and_nothing_goes_live(mariadb_url):
    db, table = _setup(mariadb_url)

    def write(out):
        out.write(_rows(0, 1000))
        raise ValueError("shard 1 holds model version v2, the run used v1")

    with pytest.raises(ValueError, match="model version v2"):
        with piped_sources([write]) as (sources, finish):
            publish_mysql(db, table, sources, 2000, lambda: (finish(), _log(2000))[1], day=DAY)
    assert _count(db) == 0
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ml_publish_log")).scalar() == 0
        leftovers = conn.execute(text("SHOW TABLES LIKE 'm_predictions__%'")).fetchall()
    assert leftovers == []
    db.dispose()


@pytest.mark.parametrize("newer_exists", [False, True], ids=["daily", "backfill"])
def test_parallel_sources_load_and_one_failing_writer_stops_both(mariadb_url, newer_exists):
    """Two pipes with disjoint key ranges load in two sessions; a failing one leaves nothing live."""
    db, table = _setup(mariadb_url)
    if newer_exists:
        with db.connect() as conn:
            # A newer day, published: its row and its log row (the publish reads the newest day there).
            conn.execute(text("INSERT INTO m_predictions VALUES (999999, '2026-12-01', 'v0', 'x', 0.1)"))
            newer = {**_log(1), "ds": date(2026, 12, 1)}
            conn.execute(schema.publish_log.insert().values(**newer))
            conn.commit()
    before = _count(db)

    def writer(start: int, fail: bool):
        def write(out):
            out.write(_rows(start, 5000))
            if fail:
                raise OSError("range file vanished")
            out.write(_rows(start + 5000, 5000))

        return write

    ranges = [(None, 10_000), (10_000, None)]
    with pytest.raises(OSError, match="range file vanished"):
        with piped_sources([writer(0, False), writer(10_000, True)], ranges) as (sources, finish):
            publish_mysql(db, table, sources, 20_000, lambda: (finish(), _log(20_000))[1], day=DAY)
    assert _count(db) == before
    with db.connect() as conn:
        assert conn.execute(text("SHOW TABLES LIKE 'm_predictions__%'")).fetchall() == []
    with piped_sources([writer(0, False), writer(10_000, False)], ranges) as (sources, finish):
        path = publish_mysql(db, table, sources, 20_000, lambda: (finish(), _log(20_000))[1], day=DAY)
    assert path == ("backfill" if newer_exists else "daily")
    assert _count(db) == before + 20_000
    db.dispose()
