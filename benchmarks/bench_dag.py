"""The score DAG's tasks as Airflow runs them, against a DIY DAG written by hand.

    python benchmarks/bench_dag.py --devices 1000000 [--devices 10000000 ...] [--repeat 3]
        [--publish-mode partitioned] [--json]

For each size, on a stack started here (MariaDB 10.11 as the app DB, moto's S3 server as the
object store, the DuckDB warehouse, the local launcher; ``device_gender`` with 2 score shards):

1. set-up, not timed: the synthetic warehouse with ``--devices`` devices, the label sheet, and
   ``mlbatch run --stage labels --stage unload --stage train`` (a production model);
2. **the score DAG**: each task of ``device_gender__score`` in its own process, as a worker runs
   it (the task's target with its arguments, :mod:`mlbatch.stages`), each started as soon as the
   tasks it waits for are done, as the scheduler starts them: the 2 score shards side by side,
   the publish and the export side by side;
3. **the DIY DAG**, what a team writes by hand: one ``PythonOperator`` that reads the same
   unload's parts with ``pandas.read_parquet``, predicts with the same xgboost model
   (``DMatrix`` + ``predict``) and writes the day so that an application can read it by key:
   ``DataFrame.to_sql`` (SQLAlchemy + PyMySQL, chunksize 10,000) into a staging table, a primary
   key on the entity, and a ``RENAME TABLE`` swap with the live table.

Both sides run for two table states, **empty** (the model's tables dropped first: the first
day) and **steady** (yesterday's rows in place for every key: each key is re-scored), ``--repeat``
times each, the two sides alternating; the figures are medians. Each task's wall time, peak RSS
(the task process's ``VmHWM``, or the job processes' it waited for, whichever is larger) and
bytes read from the object store, by prefix (devtools/counting_fs.py). The ratio compares the
DAG's tasks from the same unloaded parts on (features_gate to export_gate) with the DIY task;
the DAG's critical path (its wall time, tasks side by side) is set against the sum of its task
times, and the bytes it read of the day's predictions against the day's parquet size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

MODEL = "device_gender"
DS = "2026-11-22"
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


def task(run_id: str, target: str, args: list) -> dict:
    """One task of the score DAG: what StageOperator / ExternalWorkOperator run, synchronously."""
    from mlbatch.airflow.pipeline import resolve
    from mlbatch.stages.external import ExternalWork

    from devtools.counting_fs import count_reads

    with count_reads(("s3", "file")) as read:
        result = resolve(target)(_ctx(run_id), *args)
        if isinstance(result, ExternalWork):  # a job or warehouse statement: start, wait here, finish
            result = result.run()
    kept = {k: v for k, v in (result or {}).items() if isinstance(v, int | float | str)}
    return {**kept, "read_bytes": _by_prefix(read)}


def _by_prefix(read: dict[str, int]) -> dict[str, int]:
    """Bytes read, by the object store's top-level prefix (predictions, export, unload, models, runs)."""
    out: dict[str, int] = {}
    for path, n in read.items():
        parts = path.split("/")
        top = next((p for p in parts if p in ("predictions", "export", "unload", "models", "runs")), "other")
        out[top] = out.get(top, 0) + n
    return out


def diy(url: str, run_id: str) -> dict:
    """The hand-written DAG's one PythonOperator: read_parquet -> predict -> to_sql, keyed and swapped."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from mlbatch.backends.store import filesystem_for
    from mlbatch.features.reader import read_manifest
    from sqlalchemy import create_engine

    ctx = _ctx(run_id)
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
    live, stage = f"diy_{MODEL}_predictions", f"diy_{MODEL}_predictions__new"
    engine = create_engine(url)
    out.to_sql(stage, engine, if_exists="replace", index=False, chunksize=10_000)
    with engine.begin() as conn:  # what an application can read by key, swapped in at once
        conn.exec_driver_sql(f"ALTER TABLE `{stage}` ADD PRIMARY KEY (entity_key)")
        conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS `{live}` LIKE `{stage}`")
        conn.exec_driver_sql(f"RENAME TABLE `{live}` TO `{live}__old`, `{stage}` TO `{live}`")
        conn.exec_driver_sql(f"DROP TABLE `{live}__old`")
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
    """The DAG Airflow builds waits for what the pipeline declares (what run_dag schedules by)."""
    from mlbatch.airflow.dag_factory import score_dag
    from mlbatch.spec import load_spec

    dag = score_dag(load_spec(REPO / "dags" / "specs" / f"{MODEL}.yaml"))
    built = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    declared = {name: set(up) for name, up in _upstream().items()}
    if built != declared:
        raise RuntimeError(f"the score DAG waits for {built}, the pipeline declares {declared}")


def _wait(name: str, proc: subprocess.Popen, started: float, into: dict[str, dict]) -> None:
    into[name] = _finish(name, proc, started)


def run_dag(env: dict[str, str], run_id: str, log) -> dict:
    """The score DAG's tasks, each started when those it waits for are done (the scheduler's
    order; a mapped task's shards side by side). Per task: seconds, peak RSS, bytes read; and
    the wall time from the first task after the unload to the last."""
    import threading

    upstream = _upstream()
    done: dict[str, dict] = {}
    running: dict[str, threading.Thread] = {}
    marks: dict[str, float] = {}
    while running or any(name not in done for name, _, _ in TASKS):
        for name, target, args in TASKS:
            if name in done or name in running or not set(upstream[name]) <= set(done):
                continue
            marks.setdefault(name, time.perf_counter())
            if args == ("*shards",):
                thread = threading.Thread(target=_score_shards, args=(env, run_id, target, done))
            else:
                proc, started = _run(_child("task", run_id, target, json.dumps(list(args))), env)
                thread = threading.Thread(target=_wait, args=(name, proc, started, done))
            running[name] = thread
            thread.start()
        time.sleep(0.05)
        for name in [n for n, t in running.items() if not t.is_alive()]:
            running.pop(name).join()
            if name not in done:
                raise RuntimeError(f"{name} ended without a result")
            marks[f"{name}:end"] = time.perf_counter()
            log(f"    {name}: {done[name]['seconds']} s, {done[name]['peak_rss_mib']} MiB")
    first = FROM_UNLOAD[0]
    wall = max(marks[f"{t}:end"] for t, _, _ in TASKS) - marks[first]
    return {"tasks": done, "wall_from_unload_s": round(wall, 2)}


def _score_shards(env: dict[str, str], run_id: str, target: str, done: dict[str, dict]) -> None:
    procs = [(f"score[{s}]", *_run(_child("task", run_id, target, json.dumps([s])), env)) for s in range(2)]
    started = min(p[2] for p in procs)
    shards: dict[str, dict] = {}
    waits = [threading.Thread(target=_wait, args=(n, p, t, shards)) for n, p, t in procs]
    for w in waits:
        w.start()
    for w in waits:
        w.join()
    done.update(shards)
    done["score"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": max(s["peak_rss_mib"] for s in shards.values()),
        "result": {"read_bytes": {}},
    }


def _upstream() -> dict[str, tuple[str, ...]]:
    from mlbatch.spec import load_spec

    return DAGS["score"].upstream(load_spec(REPO / "dags" / "specs" / f"{MODEL}.yaml"))


def critical_path(tasks: dict[str, dict]) -> float:
    """The longest chain of task seconds through the DAG, from the first task after the unload."""
    upstream, longest = _upstream(), {}
    for name in FROM_UNLOAD:
        before = [longest[u] for u in upstream[name] if u in longest]
        longest[name] = tasks[name]["seconds"] + max(before, default=0.0)
    return round(max(longest.values()), 2)


def reset(url: str, state: str) -> None:
    """``empty``: the model's app DB tables dropped, its publish log emptied, the DIY table dropped
    (the first day); ``steady``: left as the last run left them (every key already there)."""
    if state != "empty":
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        for table in (f"{MODEL}_predictions", f"{MODEL}_history", f"{MODEL}_base", f"diy_{MODEL}_predictions"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        if conn.exec_driver_sql("SHOW TABLES LIKE 'ml_publish_log'").first():
            conn.execute(text("DELETE FROM ml_publish_log WHERE model = :m"), {"m": MODEL})
    engine.dispose()


def _day_bytes(endpoint: str, bucket: str, run_id: str) -> int:
    """The day's predictions as the score jobs wrote them: the run's parquet shards, in bytes."""
    import boto3
    from mlbatch import names

    prefix = names.predictions_prefix(MODEL, DS, names.run_key(run_id))
    listed = boto3.client("s3", **_s3_args(endpoint)).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sum(o["Size"] for o in listed.get("Contents", []) if o["Key"].endswith(".parquet"))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return round(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2, 2)


def _one_run(env: dict[str, str], url: str, endpoint: str, bucket: str, state: str, rep: int, log) -> dict:
    """One repetition of one table state: both sides, in turn (the DAG first on even repetitions)."""
    run_id = f"bench_dag__{state}{rep}"
    out: dict = {}
    for side in ("dag", "diy") if rep % 2 == 0 else ("diy", "dag"):
        reset(url, state)
        if side == "dag":
            log(f"  {state} #{rep + 1}: the score DAG")
            out["dag"] = run_dag(env, run_id, log)
        else:
            if "dag" not in out:  # the DIY reads the unload and the model the DAG's first tasks leave
                _prepare_run(env, run_id)
            out["diy"] = _finish("diy", *_run(_child("diy", url, run_id), env))
            log(f"  {state} #{rep + 1}: DIY read_parquet -> predict -> to_sql + key + swap: {out['diy']['seconds']} s")
    tasks = out["dag"]["tasks"]
    day = _day_bytes(endpoint, bucket, run_id)
    read = sum(tasks[t]["result"].get("read_bytes", {}).get("predictions", 0) for t in FROM_UNLOAD)
    exported = sum(tasks[t]["result"].get("read_bytes", {}).get("export", 0) for t in FROM_UNLOAD)
    return {
        **out,
        "sum_task_s": round(sum(tasks[t]["seconds"] for t in FROM_UNLOAD), 2),
        "critical_path_s": critical_path(tasks),
        "day_parquet_bytes": day,
        "day_read_bytes": read,
        "export_file_read_bytes": exported,
    }


def _prepare_run(env: dict[str, str], run_id: str) -> None:
    """resolve_model and unload_scoring of ``run_id``: what the DIY task reads when it goes first."""
    for name, target, args in TASKS[:2]:
        _finish(name, *_run(_child("task", run_id, target, json.dumps(list(args))), env))


def summarize(devices: int, runs: dict[str, list[dict]]) -> dict:
    """Medians per table state: the DAG's wall from the unload, the DIY's, each task's seconds."""
    out: dict = {"devices": devices}
    for state, reps in runs.items():
        dag = _median([r["dag"]["wall_from_unload_s"] for r in reps])
        diy = _median([r["diy"]["seconds"] for r in reps])
        tasks = {t: _median([r["dag"]["tasks"][t]["seconds"] for r in reps]) for t in reps[0]["dag"]["tasks"]}
        out[state] = {
            "rows": reps[0]["dag"]["tasks"]["publish"]["result"]["rows"],
            "dag_from_unload_s": dag,
            "diy_s": diy,
            "ratio": round(diy / dag, 2),
            "sum_task_s": _median([r["sum_task_s"] for r in reps]),
            "critical_path_s": _median([r["critical_path_s"] for r in reps]),
            "critical_over_sum": round(_median([r["critical_path_s"] / r["sum_task_s"] for r in reps]), 3),
            "day_read_over_size": round(_median([r["day_read_bytes"] / r["day_parquet_bytes"] for r in reps]), 2),
            "export_file_read_over_size": round(
                _median([r["export_file_read_bytes"] / r["day_parquet_bytes"] for r in reps]), 2
            ),
            "tasks_s": tasks,
            "max_task_rss_mib": max(t["peak_rss_mib"] for r in reps for t in r["dag"]["tasks"].values()),
            "diy_rss_mib": max(r["diy"]["peak_rss_mib"] for r in reps),
            "runs": reps,
        }
    return out


def specs_dir(home: Path, mode: str) -> Path:
    """The repo's specs, with ``publish.mode`` set for the benchmarked model (its relative paths
    start at the project dir, not the spec's folder, so a copy elsewhere reads the same files)."""
    if mode == "upsert":
        return REPO / "dags" / "specs"
    folder = home / "specs"
    folder.mkdir()
    for spec in (REPO / "dags" / "specs").glob("*.yaml"):
        text = spec.read_text() + (f"publish: {{mode: {mode}}}\n" if spec.stem == MODEL else "")
        (folder / spec.name).write_text(text)
    return folder


def run_size(devices: int, repeat: int, log, mode: str = "upsert") -> dict:
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
                "MLBATCH_SPECS_DIR": str(specs_dir(home, mode)),
                "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}",
            }
            boto3.client("s3", **_s3_args(moto.endpoint)).create_bucket(Bucket=bucket)
            t0 = time.perf_counter()
            setup = subprocess.run(_child("setup", str(devices)), env=env, capture_output=True, text=True)
            if setup.returncode != 0:
                raise RuntimeError(f"set-up failed:\n{setup.stdout[-2000:]}\n{setup.stderr[-3000:]}")
            log(f"{devices:,} devices: set-up (warehouse, labels, training) took {time.perf_counter() - t0:.0f} s")
            runs: dict[str, list[dict]] = {"empty": [], "steady": []}
            for rep in range(repeat):
                for state in runs:
                    runs[state].append(_one_run(env, server.url, moto.endpoint, bucket, state, rep, log))
        finally:
            moto.stop()
            server.stop()
    return {"publish_mode": mode, **summarize(devices, runs)}


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
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side per table state, alternating")
    ap.add_argument(
        "--publish-mode", choices=["upsert", "partitioned"], default="upsert", help="the spec's publish.mode"
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "setup":
            result = setup(int(rest[0]))
        elif kind == "task":
            result = task(rest[0], rest[1], json.loads(rest[2]))
        else:
            result = diy(rest[0], rest[1])
        print(json.dumps({**result, "task_peak_rss_mib": _own_peak_mib()}))
        return
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    check_task_order()
    results = [
        run_size(n, args.repeat, lambda m: print(m, file=sys.stderr, flush=True), args.publish_mode)
        for n in args.devices or [1_000_000]
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        for state in ("empty", "steady"):
            x = r[state]
            print(f"\nscore DAG vs DIY DAG, {x['rows']:,} rows ({r['devices']:,} devices), {state} tables, medians")
            print(f"{'task':18} {'seconds':>8}")
            for name, seconds in x["tasks_s"].items():
                print(f"{name:18} {seconds:>8.2f}")
            print(
                f"DAG from the unload on {x['dag_from_unload_s']:.1f} s (critical path {x['critical_path_s']:.1f} s of "
                f"{x['sum_task_s']:.1f} s of tasks: {x['critical_over_sum']}); DIY {x['diy_s']:.1f} s: {x['ratio']}x; "
                f"day read {x['day_read_over_size']}x its parquet size (+ the export file "
                f"{x['export_file_read_over_size']}x); peak task RSS {x['max_task_rss_mib']} MiB, "
                f"DIY {x['diy_rss_mib']} MiB"
            )


if __name__ == "__main__":
    main()
