"""Publishing N predictions into a real MariaDB: mlbatch's bulk path vs ``DataFrame.to_sql``.

    python benchmarks/bench_publish.py --rows 1000000 [--json] [--to-sql-rows N] [--commit key_range] [--sessions N]

Starts its own MariaDB 10.11 (``devtools.devservers``), writes three scored days as prediction
shards (what the score jobs write), then times, each in its own child process so peak RSS
figures do not mix:

* ``daily (empty table)``: the first day into an empty ``<model>_predictions``;
* ``daily (steady state)``: the next day, every key re-scored, over a table holding the day
  before (the guarded upsert updates every row);
* ``backfill``: an older day over that table, half its keys new (half the upsert's rows are
  kept by the guard, half inserted);

Every day takes the same steps (staging load, partition exchange, one upsert transaction: see
``mlbatch.backends.appdb.mysql_publish``); the path names only say whether a newer day existed.
* ``to_sql``: ``pandas.read_parquet`` + ``DataFrame.to_sql`` (SQLAlchemy + PyMySQL, default
  method, chunksize 10,000) of the first day into an empty table of the same schema.

rows/s counts the day's rows over the wall time of the whole step (reading parquet included;
imports excluded on both paths).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

MODEL = "bench"
SHARDS = 4
DAYS = {"first": "2026-11-20", "next": "2026-11-21", "old": "2026-11-10"}
SPEC = f"""
name: {MODEL}
owner: bench
entity: {{key: item_id, type: integer}}
labels:
  source: {{file: labels.csv}}
  columns: {{key: item_id, label: cls}}
  classes: [neg, pos]
features: {{training_sql: t.sql, scoring_sql: s.sql}}
train: {{family: xgboost, gate: {{min: 0.5}}}}
score: {{shards: {SHARDS}}}
"""
PRIME = 2_654_435_761  # keys come out in a scrambled order (i * PRIME mod N), as from a warehouse


def _env(home: Path, url: str):
    from mlbatch.backends.env import Environment

    return Environment(
        home=home,
        appdb_url=url,
        object_store=(home / "objects").as_uri(),
        warehouse_url=f"duckdb://{home / 'wh.duckdb'}",
        launcher_kind="local",
        specs_dir=home,
    )


def _ctx(home: Path, url: str, ds: str):
    from mlbatch.spec import load_spec
    from mlbatch.stages.context import RunContext

    return RunContext(_env(home, url), load_spec(home / f"{MODEL}.yaml"), ds, f"bench__{ds}")


def write_spec(home: Path, publish: str = "") -> None:
    """The bench model's spec (``publish``: its publish section, YAML); its queries must exist and
    render when the spec loads (they never run)."""
    for query in ("t.sql", "s.sql"):
        (home / query).write_text("SELECT 1 AS item_id\n")
    spec = SPEC.replace("t.sql", str(home / "t.sql")).replace("s.sql", str(home / "s.sql")) + publish
    (home / f"{MODEL}.yaml").write_text(spec)


def write_days(home: Path, rows: int, days: dict[str, str] | None = None, stride: int = 1, publish: str = "") -> None:
    """Scored days (default: the three of ``DAYS``) as prediction shards, written chunk by chunk.

    Keys are ``1..rows`` (the ``old`` day's shifted by ``rows // 2``), times ``stride``: a
    stride leaves room for other entities between the day's keys (bench_publish_scale.py)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlbatch.backends.warehouse.manifest import Entry, EntryMeta, Manifest, Schema

    write_spec(home, publish)
    rng = np.random.default_rng(7)
    for name, ds in (days or DAYS).items():
        ctx = _ctx(home, "sqlite://", ds)
        offset = rows // 2 if name == "old" else 0
        per = -(-rows // SHARDS)
        for shard in range(SHARDS):
            path = Path(ctx.env.store.uri(ctx.shard_key(shard)).removeprefix("file://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            lo, hi = shard * per, min(rows, (shard + 1) * per)
            with pq.ParquetWriter(path, _schema()) as w:
                for start in range(lo, hi, 500_000):
                    i = np.arange(start, min(hi, start + 500_000), dtype=np.int64)
                    score = rng.random(len(i))
                    w.write_table(
                        pa.table(
                            {
                                # from 1: to_sql would turn key 0 into an AUTO_INCREMENT id
                                "entity_key": ((i * PRIME) % rows + offset + 1) * stride,
                                "label": np.where(score >= 0.5, "pos", "neg"),
                                "score": score,
                                "ds": pa.repeat(pa.scalar(ds), len(i)),
                                "model_version": pa.repeat(pa.scalar("v1"), len(i)),
                            },
                            schema=_schema(),
                        )
                    )
        meta = EntryMeta(content_length=1, record_count=rows)
        manifest = Manifest(entries=[Entry(url="s3://unused", meta=meta)], schema=Schema(elements=[]), meta=meta)
        ctx.env.store.put_bytes(ctx.manifest_key("score"), manifest.to_json().encode())
        ctx.save_state("model", {"version": "v1", "artifact_uri": "unused", "roc_auc": 0.9})


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("entity_key", pa.int64()),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("ds", pa.string()),
            ("model_version", pa.string()),
        ]  # fmt: skip
    )


def child(kind: str, home: Path, url: str, ds: str, limit: int) -> dict:
    """One measured step (runs in its own process)."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    # Libraries are imported before the clock starts on both paths: a worker imports them once.
    import duckdb  # noqa: F401  (imported on first use by the publish stage)
    from mlbatch.stages.publish import publish

    started = time.perf_counter()
    if kind == "to_sql":
        import pandas as pd
        from mlbatch.backends.appdb import schema
        from mlbatch.backends.appdb.hook import AppDbHook

        ctx = _ctx(home, url, ds)
        db = AppDbHook(url)
        db.ensure_schema([(MODEL, "integer")])
        started = time.perf_counter()
        files = [ctx.env.store.uri(ctx.shard_key(s)).removeprefix("file://") for s in range(SHARDS)]
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).head(limit)
        df["ds"] = pd.to_datetime(df["ds"]).dt.date
        df.to_sql(schema.predictions_table(MODEL, "integer").name, db.engine, if_exists="append", index=False,
                  chunksize=10_000)  # fmt: skip
        rows, path = len(df), "to_sql"
    else:
        result = publish(_ctx(home, url, ds))
        rows, path = result["rows"], result["path"]
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = round(rows / seconds)
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": rate, "peak_rss_mb": round(peak_mb), "path": path}


def run_child(kind: str, home: Path, url: str, ds: str, limit: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--home", str(home), "--url", url, "--ds", ds,
           "--limit", str(limit)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    if "--verbose" in sys.argv:
        print(proc.stderr, file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--to-sql-rows", type=int, default=None, help="rows for the to_sql baseline (default --rows)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="show each step's timing from the children's logs")
    ap.add_argument("--commit", choices=["day", "key_range"], default="day", help="the spec's publish.commit")
    ap.add_argument("--sessions", type=int, default=2, help="the spec's publish.sessions")
    ap.add_argument("--child")
    ap.add_argument("--home", type=Path)
    ap.add_argument("--url")
    ap.add_argument("--ds")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.home, args.url, args.ds, args.limit)))
        return

    from sqlalchemy import create_engine, text

    from devtools.devservers import start_mariadb

    with tempfile.TemporaryDirectory(prefix="mlbatch-bench-publish-") as tmp:
        home = Path(tmp)
        server = start_mariadb(home)
        try:
            admin = create_engine(server.url)
            with admin.begin() as conn:
                conn.execute(text("CREATE DATABASE bench_tosql"))
            admin.dispose()
            tosql_url = server.url.rsplit("/", 1)[0] + "/bench_tosql"
            t0 = time.perf_counter()
            write_days(home, args.rows, publish=f"publish: {{commit: {args.commit}, sessions: {args.sessions}}}\n")
            gen_s = time.perf_counter() - t0
            results = {
                "daily (empty table)": run_child("publish", home, server.url, DAYS["first"], 0),
                "daily (steady state)": run_child("publish", home, server.url, DAYS["next"], 0),
                "backfill": run_child("publish", home, server.url, DAYS["old"], 0),
                "to_sql": run_child("to_sql", home, tosql_url, DAYS["first"], args.to_sql_rows or args.rows),
            }
        finally:
            server.stop()
    base = results["to_sql"]["rows_per_s"]
    for r in results.values():
        r["vs_to_sql"] = round(r["rows_per_s"] / base, 1)
    report = {
        "rows": args.rows,
        "commit": args.commit,
        "sessions": args.sessions,
        "generate_s": round(gen_s, 1),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"publish {args.rows:,} predictions into MariaDB 10.11 (data written in {gen_s:.0f} s)")
    print(f"{'step':24} {'path':9} {'rows':>11} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12} {'vs to_sql':>9}")
    for name, r in results.items():
        print(f"{name:24} {r['path']:9} {r['rows']:>11,} {r['seconds']:>8.1f} {r['rows_per_s']:>9,} "
              f"{r['peak_rss_mb']:>12,} {r['vs_to_sql']:>8.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
