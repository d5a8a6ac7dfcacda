"""The score DAG's tasks as Airflow runs them, against a DIY DAG written by hand.

    python benchmarks/bench_dag.py --devices 1000000 [--devices 10000000 ...] [--json]

For each size, on a stack started here (MariaDB 10.11 as the app DB, moto's S3 server as the
object store, the DuckDB warehouse, the local launcher; ``device_gender`` with 2 score shards):

1. set-up, not timed: the synthetic warehouse with ``--devices`` devices, the label sheet, and
   ``mlbatch run --stage labels --stage unload --stage train`` (a production model);
2. **the score DAG**: each task of ``device_gender__score`` in its own process, as a worker runs
   it (the task's target with its arguments, :mod:`mlbatch.stages`): resolve_model,
   unload_scoring, features_gate, the 2 score shards (in parallel, as the mapped task runs
   them), predictions_gate, publish, export, export_gate;
3. **the DIY DAG**, what a team writes by hand: one ``PythonOperator`` that reads the same
   unload's parts with ``pandas.read_parquet``, predicts with the same xgboost model
   (``DMatrix`` + ``predict``) and writes the day with ``DataFrame.to_sql`` (SQLAlchemy +
   PyMySQL, chunksize 10,000) into a table of the same columns.

Each task's wall time and peak RSS (the task process's ``VmHWM``, or the job processes' it
waited for, whichever is larger). The ratio compares the DAG's tasks from the same unloaded parts on
(features_gate to export_gate: gates, scoring, publish, export) with the DIY task; the total
with the unload is shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

MODEL = "device_gender"
DS = "2026-11-22"
RUN_ID = "bench_dag__score"
# The score DAG's tasks in order, from the pipeline's declaration: (task, target, args).
from mlbatch.airflow.pipeline import DAGS  # noqa: E402 - after the path set-up above; imports nothing heavy

TASKS = [(s.name, s.call, ("*shards",) if s.per_shard else s.args) for s in DAGS["score"].steps]
FROM_UNLOAD = [t for t, _, _ in TASKS if t not in ("resolve_model", "unload_scoring")]


# --- the children ---------------------------------------------------------------------------------
def _ctx(run_id: str):
    from mlbatch.backends.env import Environment
    from mlbatch.spec import load_spec
    from mlbatch.stages.context import RunContext

    env = Environment.from_env()
    return RunContext(env, load_spec(env.specs_dir / f"{MODEL}.yaml"), DS, run_id)


def task(target: str, args: list) -> dict:
    """One task of the score DAG: what StageOperator / ExternalWorkOperator run, synchronously."""
    from mlbatch.airflow.pipeline import resolve
    from mlbatch.stages.external import ExternalWork

    result = resolve(target)(_ctx(RUN_ID), *args)
    if isinstance(result, ExternalWork):  # a job or warehouse statement: start, wait here, finish
        result = result.run()
    return {k: v for k, v in (result or {}).items() if isinstance(v, int | float | str)}


def diy(url: str) -> dict:
    """The hand-written DAG's one PythonOperator: read_parquet -> predict -> to_sql."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from mlbatch.backends.store import filesystem_for
    from mlbatch.features.reader import read_manifest
    from sqlalchemy import create_engine

    ctx = _ctx(RUN_ID)
    store = ctx.env.store
    model = ctx.load_state("model", "resolve_model first")
    prefix = model["artifact_uri"].rstrip("/")
    features = [c["name"] for c in json.loads(store.get_bytes(store.key(f"{prefix}/feature_schema.json")))]
    booster = xgb.Booster()
    booster.load_model(bytearray(store.get_bytes(store.key(f"{prefix}/model.json"))))
    manifest = read_manifest(store, store.uri(ctx.manifest_key("score")))
    frames = []
    for entry in manifest.entries:
        fs, path = filesystem_for(entry.url)
        with fs.open_input_file(path) as f:
            frames.append(pd.read_parquet(f))
    df = pd.concat(frames, ignore_index=True)
    scores = booster.predict(xgb.DMatrix(df[features].astype("float32"), feature_names=features))
    out = pd.DataFrame(
        {
            "entity_key": df[ctx.spec.entity.key],
            "ds": DS,
            "model_version": model["version"],
            "label": np.where(scores >= 0.5, ctx.spec.labels.classes[1], ctx.spec.labels.classes[0]),
            "score": scores.astype("float64"),
        }
    )
    engine = create_engine(url)
    out.to_sql(f"diy_{MODEL}_predictions", engine, if_exists="replace", index=False, chunksize=10_000)
    engine.dispose()
    return {"rows": len(out)}


def _own_peak_mib() -> int:
    """This task's peak RSS: its own ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which carries
    the parent's peak over: the parent holds moto's objects) or that of the job processes it
    waited for (forked from this process, so only its own memory carries over to them)."""
    import resource

    own = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1]) // 1024
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)


# --- the parent -----------------------------------------------------------------------------------
def _run(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, time.perf_counter()


def _finish(name: str, proc: subprocess.Popen, started: float) -> dict:
    """Wait for one task process; its wall time and peak RSS (it and the jobs it waited for)."""
    _, status, _usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "peak_rss_mib": result.pop("task_peak_rss_mib"), "result": result}


def _child(kind: str, *args: str) -> list[str]:
    return [sys.executable, __file__, "--child", kind, *args]


def check_task_order() -> None:
    from mlbatch.airflow.dag_factory import score_dag
    from mlbatch.spec import load_spec

    dag = score_dag(load_spec(REPO / "dags" / "specs" / f"{MODEL}.yaml"))
    order, seen = [], set()
    while len(order) < len(dag.task_ids):
        for t in dag.tasks:
            if t.task_id not in seen and set(t.upstream_task_ids) <= seen:
                order.append(t.task_id)
                seen.add(t.task_id)
    if order != [t for t, _, _ in TASKS]:
        raise RuntimeError(f"the score DAG's tasks are {order}, bench_dag.TASKS says {[t for t, _, _ in TASKS]}")


def run_size(devices: int, log) -> dict:
    from devtools.devservers import s3_environment, start_mariadb, start_moto_s3

    with tempfile.TemporaryDirectory(prefix="mlbatch-bench-dag-") as tmp:
        home = Path(tmp)
        server, moto = start_mariadb(home), start_moto_s3()
        try:
            import boto3

            # One bucket per size: moto's objects live in this process, not in the server started
            # for each size, so a second size in one bucket would find the first's unload and model.
            bucket = f"bench-dag-{devices}"
            env = {
                **os.environ,
                **s3_environment(moto.endpoint),
                "MLBATCH_HOME": str(home),
                "MLBATCH_APPDB_URL": server.url,
                "MLBATCH_OBJECT_STORE": f"s3://{bucket}/",
                "MLBATCH_WAREHOUSE": f"duckdb://{home / 'warehouse.duckdb'}",
                "MLBATCH_LAUNCHER": "local",
                "MLBATCH_SPECS_DIR": str(REPO / "dags" / "specs"),
                "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}",
            }
            boto3.client("s3", **_s3_args(moto.endpoint)).create_bucket(Bucket=bucket)
            t0 = time.perf_counter()
            setup = subprocess.run(_child("setup", str(devices)), env=env, capture_output=True, text=True)
            if setup.returncode != 0:
                raise RuntimeError(f"set-up failed:\n{setup.stdout[-2000:]}\n{setup.stderr[-3000:]}")
            log(f"{devices:,} devices: set-up (warehouse, labels, training) took {time.perf_counter() - t0:.0f} s")
            tasks: dict[str, dict] = {}
            for name, target, args in TASKS:
                if args == ("*shards",):
                    procs = [(f"score[{s}]", *_run(_child("task", target, json.dumps([s])), env)) for s in range(2)]
                    started = min(p[2] for p in procs)
                    shards = {n: _finish(n, p, t) for n, p, t in procs}
                    tasks.update(shards)
                    tasks["score"] = {
                        "seconds": round(time.perf_counter() - started, 2),
                        "peak_rss_mib": max(s["peak_rss_mib"] for s in shards.values()),
                    }
                else:
                    tasks[name] = _finish(name, *_run(_child("task", target, json.dumps(list(args))), env))
                log(f"  {name}: {tasks[name]['seconds']} s, {tasks[name]['peak_rss_mib']} MiB")
            diy_task = _finish("diy", *_run(_child("diy", server.url), env))
            log(f"  DIY read_parquet -> predict -> to_sql: {diy_task}")
        finally:
            moto.stop()
            server.stop()
    rows = tasks["publish"]["result"]["rows"]
    dag_s = sum(tasks[t]["seconds"] for t in FROM_UNLOAD)
    total_s = sum(tasks[t]["seconds"] for t, _, _ in TASKS)
    return {
        "devices": devices,
        "rows": rows,
        "tasks": tasks,
        "diy": diy_task,
        "dag_from_unload_s": round(dag_s, 2),
        "dag_total_s": round(total_s, 2),
        "ratio": round(diy_task["seconds"] / dag_s, 2),
        "max_task_rss_mib": max(t["peak_rss_mib"] for t in tasks.values()),
    }


def _s3_args(endpoint: str) -> dict:
    return {
        "endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


def setup(devices: int) -> dict:
    from mlbatch.backends.env import Environment
    from mlbatch.labels.source import csv_path
    from mlbatch.spec import load_spec

    from devtools import synth

    env = Environment.from_env()
    spec = load_spec(env.specs_dir / f"{MODEL}.yaml")
    warehouse = Path(env.warehouse_url.removeprefix("duckdb://"))
    synth.build_warehouse(warehouse, n_devices=devices, n_recipes=1000)
    synth.write_label_sheet_for(MODEL, warehouse, csv_path(spec, env))
    stages = ["--stage", "labels", "--stage", "unload", "--stage", "train"]
    mlbatch = [str(Path(sys.executable).parent / "mlbatch"), "run", MODEL, "--ds", DS, "--run-id", "bench_dag__setup"]
    subprocess.run([*mlbatch, *stages], check=True, stdout=sys.stderr)
    return {"devices": devices}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, action="append", help="devices in the warehouse (repeatable)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "setup":
            result = setup(int(rest[0]))
        elif kind == "task":
            result = task(rest[0], json.loads(rest[1]))
        else:
            result = diy(rest[0])
        print(json.dumps({**result, "task_peak_rss_mib": _own_peak_mib()}))
        return
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    check_task_order()
    results = [run_size(n, lambda m: print(m, file=sys.stderr, flush=True)) for n in args.devices or [1_000_000]]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"\nscore DAG vs DIY DAG, {r['rows']:,} rows scored ({r['devices']:,} devices)")
        print(f"{'task':18} {'seconds':>8} {'peak RSS MiB':>13}")
        for name, t in r["tasks"].items():
            print(f"{name:18} {t['seconds']:>8.2f} {t['peak_rss_mib']:>13,}")
        print(f"{'DIY (one task)':18} {r['diy']['seconds']:>8.2f} {r['diy']['peak_rss_mib']:>13,}")
        print(
            f"DAG from the unload on {r['dag_from_unload_s']:.1f} s (with resolve + unload {r['dag_total_s']:.1f} s); "
            f"DIY {r['diy']['seconds']:.1f} s: {r['ratio']}x"
        )


if __name__ == "__main__":
    main()
