"""``publish.mode`` upsert against partitioned, side by side in one run: publish time, point lookups
during a publish, a long reader transaction against the publish, a backfill and a rerun.

    python benchmarks/bench_publish_modes.py --rows 1000000 --days 7 [--hold-s 20] [--json]

Starts its own MariaDB 10.11 (``devtools.devservers``) and writes ``--days + 2`` scored days of the
same ``--rows`` entities (every day re-scores every key: the steady state) plus a backfill day
whose keys are half new. Then, for each mode, into its own database of the same server, each
publish in its own child process (``bench_publish.py --child publish``, the publish stage):

1. **days**: the first day into empty tables, then ``--days - 1`` steady days (the history
   keeps them all: in partitioned mode each is a partition a lookup probes);
2. **lookups during a publish**: one connection looks up random keys as the application does
   (autocommit; upsert: ``<model>_predictions`` by key; partitioned: ``mysql_sql.latest_sql``)
   for a second before the next day's publish (idle) and during it; latency percentiles;
3. **a long reader transaction**: a second connection opens a transaction with one lookup and
   holds it ``--hold-s`` seconds while the next day is published; the publish's outcome and
   time, and the other connection's lookups meanwhile; once the reader ends, the day is
   published (again, if it failed);
4. **a rerun** of that day, and **a backfill** of a day before the first (half its keys new).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO), str(REPO / "benchmarks")]

import bench_publish as bp  # noqa: E402
from bench_publish_scale import lookup_figures  # noqa: E402

FIRST = date(2026, 11, 1)
MODES = ("upsert", "partitioned")


def lookup_sql(mode: str) -> str:
    from mlbatch.backends.appdb import mysql_sql

    if mode == "upsert":
        return f"SELECT `entity_key`, `ds`, `score` FROM `{bp.MODEL}_predictions` WHERE `entity_key` = %(key)s"
    return mysql_sql.latest_sql(f"{bp.MODEL}_history", f"{bp.MODEL}_base")


def connect(url: str, autocommit: bool = True):
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database, autocommit=autocommit
    )


def lookups(url: str, sql: str, rows: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """(start time, latency) of each lookup of a random key until ``stop``; every key must be found."""
    conn = connect(url)
    rng = random.Random(3)
    with conn.cursor() as cur:
        while not stop.is_set():
            key = rng.randint(1, rows)
            started = time.perf_counter()
            cur.execute(sql, {"key": key})
            found = cur.fetchall()
            out.append((started, time.perf_counter() - started))
            if len(found) != 1:
                raise RuntimeError(f"lookup of key {key} found {len(found)} rows")
    conn.close()


class Reader:
    """Lookups in a thread while a block runs: the idle second before it, and the block itself."""

    def __init__(self, url: str, mode: str, rows: int):
        self.stop, self.out = threading.Event(), []
        self.thread = threading.Thread(target=lookups, args=(url, lookup_sql(mode), rows, self.stop, self.out))

    def __enter__(self) -> Reader:
        self.thread.start()
        time.sleep(1)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def figures(self) -> dict:
        return {
            "idle": lookup_figures([v for t, v in self.out if t < self.started]),
            "during": lookup_figures([v for t, v in self.out if t >= self.started]),
        }


def publish(home: Path, url: str, day: date) -> dict:
    return bp.run_child("publish", home, url, day.isoformat(), 0)


def held_reader(url: str, mode: str, hold_s: float, held: threading.Event) -> None:
    """A reader's transaction (a report's, say): one lookup, then the transaction stays open."""
    conn = connect(url, autocommit=False)
    with conn.cursor() as cur:
        cur.execute(lookup_sql(mode), {"key": 1})
        cur.fetchall()
        held.set()
        time.sleep(hold_s)
    conn.rollback()
    conn.close()


def run_mode(home: Path, url: str, mode: str, rows: int, days: int, hold_s: float) -> dict:
    bp.write_spec(home, f"publish: {{mode: {mode}}}\n")
    out: dict = {"mode": mode}
    out["first_day"] = publish(home, url, FIRST)
    steady = [publish(home, url, FIRST + timedelta(days=i)) for i in range(1, days)]
    out["steady_days"] = {
        "runs_s": [r["seconds"] for r in steady],
        "median_s": statistics.median(r["seconds"] for r in steady),
    }
    print(f"{mode}: first {out['first_day']['seconds']} s, steady {out['steady_days']}", file=sys.stderr)
    with Reader(url, mode, rows) as reader:
        out["lookups_day"] = publish(home, url, FIRST + timedelta(days=days))
    out["lookups"] = reader.figures()
    print(f"{mode}: lookups {out['lookups']}", file=sys.stderr)

    contested = FIRST + timedelta(days=days + 1)
    held = threading.Event()
    holder = threading.Thread(target=held_reader, args=(url, mode, hold_s, held))
    holder.start()
    held.wait(30)
    with Reader(url, mode, rows) as reader:
        started = time.perf_counter()
        try:
            result: dict = {"ok": True, **publish(home, url, contested)}
        except RuntimeError as exc:  # the child's LockWaitError, by its last line
            result = {"ok": False, "error": str(exc).strip().splitlines()[-1][:400]}
        result["wall_s"] = round(time.perf_counter() - started, 2)
    holder.join()
    out["long_reader"] = {"hold_s": hold_s, "publish": result, "lookups": reader.figures()["during"]}
    if not result["ok"]:
        out["long_reader"]["after_reader_ended"] = publish(home, url, contested)
    print(f"{mode}: long reader {out['long_reader']}", file=sys.stderr)
    out["rerun"] = publish(home, url, contested)
    out["backfill"] = publish(home, url, FIRST - timedelta(days=1))
    print(f"{mode}: rerun {out['rerun']['seconds']} s, backfill {out['backfill']['seconds']} s", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7, help="days published before the lookups (partitions kept)")
    ap.add_argument("--hold-s", type=float, default=20, help="how long the long reader keeps its transaction")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from sqlalchemy import create_engine, text

    from devtools.devservers import start_mariadb

    report: dict = {"rows": args.rows, "days": args.days}
    with tempfile.TemporaryDirectory(prefix="mlbatch-bench-modes-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        scored = {f"d{i}": (FIRST + timedelta(days=i)).isoformat() for i in range(args.days + 2)}
        bp.write_days(home, args.rows, {**scored, "old": (FIRST - timedelta(days=1)).isoformat()})
        report["generate_s"] = round(time.perf_counter() - started, 1)
        server = start_mariadb(home)
        try:
            admin = create_engine(server.url)
            with admin.begin() as conn:
                for mode in MODES:
                    conn.execute(text(f"CREATE DATABASE bench_{mode}"))
            admin.dispose()
            base = server.url.rsplit("/", 1)[0]
            report["modes"] = {
                mode: run_mode(home, f"{base}/bench_{mode}", mode, args.rows, args.days, args.hold_s) for mode in MODES
            }
        finally:
            server.stop()
    up, part = report["modes"]["upsert"], report["modes"]["partitioned"]
    report["partitioned_over_upsert"] = {
        "first_day": round(part["first_day"]["seconds"] / up["first_day"]["seconds"], 2),
        "steady_day": round(part["steady_days"]["median_s"] / up["steady_days"]["median_s"], 2),
        "lookup_p99_during": round(part["lookups"]["during"]["p99_ms"] / up["lookups"]["during"]["p99_ms"], 2),
        "backfill": round(part["backfill"]["seconds"] / up["backfill"]["seconds"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
