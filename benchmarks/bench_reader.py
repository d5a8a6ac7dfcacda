"""Reading an unload from S3: the parallel manifest reader vs pandas.read_parquet part by part.

    python benchmarks/bench_reader.py --rows 10000000 --cols 30 [--json]

Starts moto's S3 server on 127.0.0.1 (devtools.devservers), writes ``--rows`` x ``--cols``
parquet parts plus a Redshift manifest (and a second unload of ``--small-rows`` rows, to show
that the reader's peak memory does not grow with the row count), then measures, each in its own
child process so that peak RSS (``ru_maxrss``) of one does not leak into another:

- ``parallel``: :func:`mlbatch.features.reader.iter_batches` (thread pool, bounded bytes in flight);
- ``pandas``: ``pandas.read_parquet`` of each manifest entry in turn (the naive path);
- ``profile``: the drift gate's training profile (two streaming passes) over the same unload.

Every child reads through the same pyarrow S3 filesystem (mlbatch.backends.store) and must count exactly
the manifest's rows, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))


def _rss_mb() -> float:
    """Peak RSS of this process so far. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an
    exec, so a child would report the parent's peak (here, while it wrote the data)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the children ---------------------------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(mode: str, manifest_uri: str, threads: int, budget_mb: int) -> dict:
    import pyarrow  # noqa: F401  (imported before the baseline, as every mode needs it)
    from mlbatch.features.reader import iter_batches, read_manifest

    manifest = read_manifest(None, manifest_uri)
    if mode == "pandas":
        import pandas as pd
        from mlbatch.backends.store import filesystem_for
    baseline = _rss_mb()
    t0, cpu0 = time.perf_counter(), _cpu_s()
    rows = 0
    if mode in ("parallel", "rowgroups"):
        # rowgroups: every part read row group by row group (what parts over MAXFILESIZE get)
        whole = {"parallel": {}, "rowgroups": {"whole_part_bytes": 0}}[mode]
        for batch in iter_batches(manifest_uri, threads=threads, max_bytes_in_flight=budget_mb * 2**20, **whole):
            rows += batch.num_rows
    elif mode == "pandas":
        for entry in manifest.entries:
            fs, path = filesystem_for(entry.url)
            rows += len(pd.read_parquet(path, filesystem=fs))
    elif mode == "profile":
        from mlbatch.features.profile import build_profile

        rows = build_profile(manifest_uri, exclude=["id"], max_bytes_in_flight=budget_mb * 2**20)["rows"]
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    if rows != manifest.record_count:
        raise SystemExit(f"{mode}: read {rows} rows, the manifest says {manifest.record_count}")
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "client_cpu_s": cpu,
        "peak_rss_mb": _rss_mb(),
        "baseline_mb": baseline,
    }


def run_child(mode: str, manifest_uri: str, args: argparse.Namespace, env: dict[str, str], threads: int = 4) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, manifest_uri, "--threads", str(threads)]
    cmd += ["--budget-mb", str(args.budget_mb)]
    cpu0 = _cpu_s()  # moto's server runs in this process's threads: its CPU time is ours
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "server_cpu_s": _cpu_s() - cpu0}


# -- the data ---------------------------------------------------------------------------------------


def write_unload(root: str, prefix: str, rows: int, cols: int, parts: int, row_group: int) -> str:
    """``parts`` parquet files + a Redshift manifest: an id, a third int32 counts, the rest doubles."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlbatch.backends.store import ObjectStore, filesystem_for
    from mlbatch.backends.warehouse.manifest import Column, ColumnType, Entry, EntryMeta, Manifest, Schema

    store = ObjectStore(root)
    n_int = (cols - 1) // 3
    names = ["id"] + [f"n{i:02d}" for i in range(n_int)] + [f"x{i:02d}" for i in range(cols - 1 - n_int)]
    bounds = [rows * p // parts for p in range(parts + 1)]

    def one(p: int) -> Entry:
        rng = np.random.default_rng(p)
        n = bounds[p + 1] - bounds[p]
        arrays = [pa.array(np.arange(bounds[p], bounds[p + 1], dtype=np.int64))]
        arrays += [pa.array(rng.integers(0, 1000, n, dtype=np.int32)) for _ in range(n_int)]
        arrays += [pa.array(np.round(rng.normal(0, 1, n), 4)) for _ in range(cols - 1 - n_int)]
        table = pa.Table.from_arrays(arrays, names=names)
        key = f"{prefix}{p:04d}_part_00.parquet"
        fs, path = filesystem_for(store.uri(key))
        with fs.open_output_stream(path) as sink:
            pq.write_table(table, sink, row_group_size=row_group, compression="snappy")
        size = fs.get_file_info(path).size
        return Entry(url=store.uri(key), meta=EntryMeta(content_length=size, record_count=n))

    with ThreadPoolExecutor(2) as pool:
        entries = list(pool.map(one, range(parts)))
    types = ["bigint"] + ["integer"] * n_int + ["double precision"] * (cols - 1 - n_int)
    manifest = Manifest(
        entries=entries,
        schema=Schema(elements=[Column(name=n, type=ColumnType(base=t)) for n, t in zip(names, types, strict=True)]),
        meta=EntryMeta(content_length=sum(e.meta.content_length for e in entries), record_count=rows),
    )
    return store.put_bytes(f"{prefix}manifest", manifest.to_json().encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument(
        "--small-rows",
        type=int,
        default=None,
        help="second unload for the RSS comparison (default: one part per thread, so every worker is busy in both)",
    )
    ap.add_argument("--cols", type=int, default=30)
    ap.add_argument(
        "--part-rows", type=int, default=625_000, help="rows per parquet part (UNLOAD caps parts by MAXFILESIZE)"
    )
    ap.add_argument("--row-group", type=int, default=131_072)
    ap.add_argument("--threads", default="4", help="reader threads; a list (2,4) measures each, the first is compared")
    ap.add_argument("--budget-mb", type=int, default=256, help="the reader's max_bytes_in_flight, MiB")
    ap.add_argument("--no-profile", action="store_true", help="skip the drift-profile measurement")
    ap.add_argument(
        "--rowgroups", action="store_true", help="also read every part row group by row group (no whole-part GET)"
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "MANIFEST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.threads), args.budget_mb)))
        return

    import logging

    import boto3

    from devtools.devservers import s3_environment, start_moto_s3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = start_moto_s3()
    env = s3_environment(server.endpoint)
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="bench")
    threads = [int(t) for t in str(args.threads).split(",")]
    small_rows = args.small_rows or max(1, min(args.rows // 2, threads[0] * args.part_rows))
    t0 = time.perf_counter()
    parts = {n: max(1, -(-n // args.part_rows)) for n in (args.rows, small_rows)}
    big = write_unload("s3://bench/root", "unload/big/", args.rows, args.cols, parts[args.rows], args.row_group)
    small = write_unload("s3://bench/root", "unload/small/", small_rows, args.cols, parts[small_rows], args.row_group)
    write_s = time.perf_counter() - t0
    results = {"parallel": run_child("parallel", big, args, env, threads[0])}
    results["pandas"] = run_child("pandas", big, args, env)
    results["parallel_small"] = run_child("parallel", small, args, env, threads[0])
    for t in threads[1:]:
        results[f"parallel_t{t}"] = run_child("parallel", big, args, env, t)
    if args.rowgroups:
        results["rowgroups"] = run_child("rowgroups", big, args, env, threads[0])
    if not args.no_profile:
        results["profile"] = run_child("profile", big, args, env, threads[0])
    server.stop()
    report = {
        "rows": args.rows,
        "small_rows": small_rows,
        "cols": args.cols,
        "parts": parts[args.rows],
        "small_parts": parts[small_rows],
        "threads": threads,
        "budget_mb": args.budget_mb,
        "cpus": os.cpu_count(),
        "write_seconds": round(write_s, 1),
        "results": results,
        "speedup": results["parallel"]["rows_per_s"] / results["pandas"]["rows_per_s"],
        "rss_ratio_big_small": results["parallel"]["peak_rss_mb"] / results["parallel_small"]["peak_rss_mb"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.rows:,} rows x {args.cols} columns in {parts[args.rows]} parts ({small_rows:,} rows in "
        f"{parts[small_rows]} for the small unload) on moto S3 ({os.cpu_count()} CPUs)"
    )
    print(
        f"{'reader':<26}{'rows':>12}{'seconds':>9}{'rows/s':>12}{'peak RSS MB':>13}{'baseline MB':>13}"
        f"{'CPU s':>7}{'server CPU s':>14}"
    )
    labels = {
        "parallel": f"parallel reader {threads[0]} thr",
        "pandas": "pandas.read_parquet",
        "parallel_small": "parallel reader (small)",
        "profile": "drift profile (2 passes)",
        "rowgroups": f"row group by row group {threads[0]} thr",
    }
    for name, r in results.items():
        label = labels.get(name, f"parallel reader {name.rsplit('_t', 1)[-1]} thr")
        print(
            f"{label:<26}{r['rows']:>12,}{r['seconds']:>9.1f}{r['rows_per_s']:>12,.0f}"
            f"{r['peak_rss_mb']:>13,.0f}{r['baseline_mb']:>13,.0f}{r['client_cpu_s']:>7.1f}{r['server_cpu_s']:>14.1f}"
        )
    print(
        f"speedup parallel/pandas: {report['speedup']:.1f}x; parallel peak RSS at {args.rows:,} vs "
        f"{small_rows:,} rows: {report['rss_ratio_big_small']:.2f}x"
    )


if __name__ == "__main__":
    main()
