"""The publish's upsert step alone: the statements production runs against the one they replaced.

    python benchmarks/bench_publish_upsert.py --rows 1000000 [--new 0.0] [--rounds 3] [--json]

Starts its own MariaDB 10.11 (``mlbatch.devservers``), fills ``<model>_predictions`` with
``rows * (1 - new)`` entities of one day and the history's next-day partition with ``rows``
entities (keys 1..rows: with ``--new 0`` every entity is re-scored, the steady state; with
``--new 0.5`` half are new, as in ``bench_publish.py``'s backfill), then times, in alternation
on the same server (the machine is shared: only figures of one run compare), each variant as
the publish runs it, in one transaction from a freshly restored latest table:

* ``odku``: ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE col = IF(VALUES(ds) >= ds, ...)``,
  the upsert before issue 17 (text kept here);
* ``join``: :func:`mlbatch.appdb.mysql_sql.guarded_update_sql` (``UPDATE ... JOIN``, guarded)
  then :func:`~mlbatch.appdb.mysql_sql.insert_new_keys_sql` (anti-join insert), production's.

Both leave the same table (checked after every round).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

MODEL = "bench"
OLD, DAY = date(2026, 11, 20), date(2026, 11, 21)


def odku_sql(table: str, source: str) -> str:
    """The guarded upsert the publish ran before issue 17 (one statement)."""
    cols = "`entity_key`, `ds`, `model_version`, `label`, `score`"
    fresh = f"VALUES(`ds`) >= `{table}`.`ds`"
    sets = ", ".join(
        f"`{table}`.`{c}` = IF({fresh}, VALUES(`{c}`), `{table}`.`{c}`)"
        for c in ("model_version", "label", "score", "ds")
    )
    return (
        f"INSERT INTO `{table}` ({cols}) SELECT {cols} FROM `{source}` WHERE `{source}`.`ds` = %(ds)s "
        f"ON DUPLICATE KEY UPDATE {sets}"
    )


def fill(conn: Any, rows: int, new: float) -> None:
    from mlbatch.appdb import mysql_sql, schema

    history = schema.history_table(MODEL, "integer")
    conn.exec_driver_sql(mysql_sql.history_ddl(history))
    conn.exec_driver_sql(mysql_sql.add_partition_sql(history.name, DAY))
    conn.exec_driver_sql(f"CREATE TABLE {MODEL}_base LIKE {MODEL}_predictions")
    conn.exec_driver_sql(
        f"INSERT INTO {MODEL}_base SELECT seq, '{OLD}', 'v1', IF(MOD(seq, 2), 'pos', 'neg'), MOD(seq, 1000) / 1000 "
        f"FROM seq_1_to_{int(rows * (1 - new))}"
    )
    conn.exec_driver_sql(
        f"INSERT INTO {history.name} SELECT seq, '{DAY}', 'v2', IF(MOD(seq, 3), 'pos', 'neg'), MOD(seq, 997) / 997 "
        f"FROM seq_1_to_{rows}"
    )


def run(rows: int, new: float, rounds: int) -> dict[str, Any]:
    from mlbatch.appdb import mysql_sql
    from mlbatch.appdb.hook import AppDbHook
    from mlbatch.devservers import start_mariadb

    server = start_mariadb()
    db = AppDbHook(server.url)
    db.ensure_schema([(MODEL, "integer")])
    table, history = f"{MODEL}_predictions", f"{MODEL}_history"
    variants = {
        "odku": [odku_sql(table, history)],
        "join": [mysql_sql.guarded_update_sql(table, history), mysql_sql.insert_new_keys_sql(table, history)],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    tables: set[tuple[Any, ...]] = set()
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            fill(conn, rows, new)
            for _ in range(rounds):
                for name, statements in variants.items():
                    conn.exec_driver_sql(f"TRUNCATE {table}")
                    conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {MODEL}_base")
                    started = time.perf_counter()
                    conn.exec_driver_sql("START TRANSACTION")
                    for sql in statements:
                        conn.exec_driver_sql(sql, {"ds": DAY})
                    conn.exec_driver_sql("COMMIT")
                    times[name].append(round(time.perf_counter() - started, 2))
                    n, fresh, digest = conn.exec_driver_sql(
                        f"SELECT COUNT(*), SUM(ds = %s), SUM(CRC32(CONCAT_WS(',', entity_key, ds, model_version, "
                        f"label, score))) FROM {table}",
                        (DAY,),
                    ).one()
                    if (n, fresh) != (rows, rows):
                        raise RuntimeError(f"{name}: {n} rows, {fresh} of {DAY}; expected {rows} of each")
                    tables.add((n, fresh, digest))
                    print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    finally:
        db.dispose()
        server.stop()
    if len(tables) != 1:
        raise RuntimeError(f"the variants left different tables: {sorted(tables)}")
    return {
        "rows": rows,
        "new": new,
        "seconds": times,
        "median_s": {name: statistics.median(t) for name, t in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--new", type=float, default=0.0, help="share of the day's keys the table lacks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.rows, args.new, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    for name, seconds in result["seconds"].items():
        print(f"{name:5} {' '.join(f'{s:6.2f}' for s in seconds)}  median {result['median_s'][name]:.2f} s")


if __name__ == "__main__":
    main()
