"""Publishing at scale: a day's cost against what the table already holds, and point lookups during a publish.

    python benchmarks/bench_publish_scale.py --rows 1000000 --others 20000000 --reader-rows 10000000 [--json]

Starts its own MariaDB 10.11 (``devtools.devservers``) and measures, each publish in its own child
process (``bench_publish.py --child publish``: the publish stage from 4 prediction shards):

1. **a day against the table's size**: the same day of ``--rows`` entities (keys ``21 * k``)
   published into an empty database, then into one whose ``<model>_predictions`` already holds
   ``--others`` other entities *interleaved* with the day's keys (every key up to the day's
   largest that is not a multiple of the stride: each of the day's rows lands between existing
   ones, the B-tree's worst case) and whose history holds them as another day's partition;
2. **point lookups during a publish**: a day of ``--reader-rows`` (keys ``1..N``: updates of
   existing entities and new ones) published into the full database while one connection looks
   up random keys by primary key, as the application does (autocommit); latency percentiles.

The fill is done server-side from MariaDB's sequence engine (not timed).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO), str(REPO / "benchmarks")]

import bench_publish as bp  # noqa: E402

FILL_DS = "2026-11-19"


def fill(url: str, others: int, stride: int) -> float:
    """``others`` entities with keys not divisible by ``stride``, in the latest table and the history."""
    from mlbatch.backends.appdb import mysql_sql, schema
    from mlbatch.backends.appdb.hook import AppDbHook
    from sqlalchemy import text

    db = AppDbHook(url)
    db.ensure_schema([(bp.MODEL, "integer")])
    history = schema.history_table(bp.MODEL, "integer")
    top = others + others // (stride - 1) + stride  # enough keys for `others` non-multiples
    started = time.perf_counter()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(mysql_sql.history_ddl(history)))
        conn.execute(
            text(mysql_sql.add_partition_sql(history.name, __import__("datetime").date.fromisoformat(FILL_DS)))
        )
        for table in (f"{bp.MODEL}_predictions", history.name):
            conn.execute(
                text(
                    f"INSERT INTO {table} (entity_key, ds, model_version, label, score) "
                    f"SELECT seq, '{FILL_DS}', 'v0', IF(seq % 2, 'pos', 'neg'), (seq % 1000) / 1000 "
                    f"FROM seq_1_to_{top} WHERE seq % {stride} <> 0 LIMIT {others}"
                )
            )
    db.dispose()
    return time.perf_counter() - started


def lookups(url: str, top_key: int, stop: threading.Event, out: list[float]) -> None:
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = pymysql.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database, autocommit=True
    )
    rng = random.Random(3)
    with conn.cursor() as cur:
        while not stop.is_set():
            key = rng.randint(1, top_key)
            started = time.perf_counter()
            cur.execute(f"SELECT score FROM {bp.MODEL}_predictions WHERE entity_key = %s", (key,))
            cur.fetchall()
            out.append(time.perf_counter() - started)
    conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def lookup_figures(latencies: list[float]) -> dict:
    """Lookups' count and latency percentiles (ms), as the benchmarks report them."""
    return {
        "lookups": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "p999_ms": round(percentile(latencies, 99.9) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 1),
        "over_100ms": sum(1 for v in latencies if v > 0.1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--others", type=int, default=20_000_000)
    ap.add_argument("--reader-rows", type=int, default=10_000_000, help="0: skip the lookup measurement")
    ap.add_argument(
        "--buffer-pool-gb",
        type=float,
        default=0,
        help="resize InnoDB's buffer pool (the test server's is 512 MB; an Aurora writer caches far more)",
    )
    ap.add_argument("--verbose", action="store_true", help="each publish step's time (bench_publish's children)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    stride = args.others // args.rows + 1

    from sqlalchemy import create_engine, text

    from devtools.devservers import start_mariadb

    report: dict = {"rows": args.rows, "others": args.others, "stride": stride}
    with tempfile.TemporaryDirectory(prefix="mlbatch-bench-scale-") as tmp:
        home = Path(tmp)
        server = start_mariadb(home)
        try:
            base = server.url.rsplit("/", 1)[0]
            admin = create_engine(server.url)
            with admin.begin() as conn:
                if args.buffer_pool_gb:
                    conn.execute(text(f"SET GLOBAL innodb_buffer_pool_size = {int(args.buffer_pool_gb * 2**30)}"))
                report["buffer_pool_mb"] = conn.execute(text("SELECT @@innodb_buffer_pool_size")).scalar() // 2**20
                for name in ("bench_empty", "bench_full"):
                    conn.execute(text(f"CREATE DATABASE {name}"))
            admin.dispose()
            empty, full = f"{base}/bench_empty", f"{base}/bench_full"
            bp.write_days(home, args.rows, {"first": bp.DAYS["first"]}, stride=stride)
            fill(empty, 0, stride)  # the same tables, empty: neither run times their creation
            report["empty table"] = bp.run_child("publish", home, empty, bp.DAYS["first"], 0)
            print(f"empty table: {report['empty table']}", file=sys.stderr)
            report["fill_s"] = round(fill(full, args.others, stride), 1)
            print(f"filled {args.others:,} other entities in {report['fill_s']} s", file=sys.stderr)
            report["full table"] = bp.run_child("publish", home, full, bp.DAYS["first"], 0)
            print(f"full table: {report['full table']}", file=sys.stderr)
            report["ratio"] = round(report["full table"]["seconds"] / report["empty table"]["seconds"], 2)
            if args.reader_rows:
                bp.write_days(home, args.reader_rows, {"next": bp.DAYS["next"]})
                latencies: list[float] = []
                stop = threading.Event()
                top_key = args.others + args.rows * stride
                reader = threading.Thread(target=lookups, args=(full, top_key, stop, latencies))
                reader.start()
                time.sleep(1)
                idle = len(latencies)
                try:
                    published = bp.run_child("publish", home, full, bp.DAYS["next"], 0)
                finally:
                    stop.set()
                    reader.join()
                during = latencies[idle:]
                report["reader"] = {"publish": published, **lookup_figures(during)}
                print(f"reader: {report['reader']}", file=sys.stderr)
        finally:
            server.stop()
    load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:3]
    report["loadavg_after"] = load
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
