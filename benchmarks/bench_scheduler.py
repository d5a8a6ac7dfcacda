"""The score DAG under the real scheduler: its wall time against the sum of its task times.

    python benchmarks/bench_scheduler.py --devices 1000000 [--runs 2] [--publish-mode partitioned] [--json]

Starts the distributed stack of ``tests/integration/airflow/airflow_stack.py`` (Airflow 3's API
server, scheduler, DAG processor and triggerer; the CeleryExecutor with two workers of their own;
PostgreSQL as the metadata DB and Redis as the broker) with MariaDB as the app DB, moto's S3
server as the object store, the embedded warehouse and the local launcher. Set-up, not timed:
a warehouse of ``--devices`` devices, the label sheet, a production model trained with
``mlbatch run`` (what the DAG tasks run). Then ``--runs`` runs of ``device_gender__score`` are
triggered one after the other through the REST API (the first into empty tables, the next ones
re-scoring every key), and for each, from the API's own records:

- the run's wall time (its start to its end) and the sum of its task instances' durations (each
  as the worker timed it, from its start to its end);
- the critical path: the longest chain of task durations through the DAG (a mapped task counts
  from its first shard's start to its last shard's end), and the scheduling overhead, wall minus
  critical path: the time no task on the longest chain was running;
- each task's wait: its start minus the end of the last task it waits for (queued by the
  scheduler, picked up by a worker, the task process started).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

MODEL = "device_gender"
DAG_ID = f"{MODEL}__score"


def write_dags(folder: Path, labels: Path, mode: str) -> None:
    """The repo's DAG file and spec, with the labels from ``labels`` (a CSV export), no schedules
    (the benchmark triggers its runs), no GPU, and ``publish.mode``."""
    import yaml

    specs = folder / "specs"
    specs.mkdir(parents=True)
    spec = yaml.safe_load((REPO / "dags" / "specs" / f"{MODEL}.yaml").read_text())
    spec["labels"]["source"] = {"file": str(labels)}
    spec["labels"]["schedule"] = None
    for query in ("training_sql", "scoring_sql"):
        spec["features"][query] = str(REPO / spec["features"][query])
    spec["train"]["schedule"] = None
    spec["train"]["resources"] = {"gpu": 0, "vcpu": 1, "memory_gib": 2}
    spec["score"]["schedule"] = None
    spec["score"]["resources"] = {"gpu": 0, "vcpu": 1, "memory_gib": 2}
    spec["publish"] = {"mode": mode}
    (specs / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(REPO / "dags" / f"{MODEL}.py", folder / f"{MODEL}.py")


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def measure(api: Any, run: dict, upstream: dict[str, tuple[str, ...]]) -> dict:
    """A finished run's figures from its task instances (see the module's docstring)."""
    r = api.get(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances", params={"limit": 100})
    r.raise_for_status()
    spans: dict[str, tuple[float, float]] = {}
    durations: dict[str, float] = {}
    for ti in r.json()["task_instances"]:
        if ti["state"] != "success" or not ti["start_date"]:
            continue  # a task left out for this spec (skipped) ran nothing
        start, end = _t(ti["start_date"]), _t(ti["end_date"])
        name = ti["task_id"]
        first, last = spans.get(name, (start, end))
        spans[name] = (min(first, start), max(last, end))
        key = name + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        durations[key] = round(ti["duration"] if ti["duration"] is not None else end - start, 2)
    wall = _t(run["end_date"]) - _t(run["start_date"])
    longest: dict[str, float] = {}
    waits: dict[str, float] = {}
    for name in upstream:  # in the pipeline's order: upstream tasks first
        if name not in spans:
            continue
        before = [u for u in upstream[name] if u in spans]
        longest[name] = (spans[name][1] - spans[name][0]) + max((longest[u] for u in before), default=0.0)
        if before:
            waits[name] = round(spans[name][0] - max(spans[u][1] for u in before), 2)
    critical = max(longest.values())
    return {
        "run_id": run["dag_run_id"],
        "wall_s": round(wall, 2),
        "sum_task_s": round(sum(durations.values()), 2),
        "critical_path_s": round(critical, 2),
        "scheduling_overhead_s": round(wall - critical, 2),
        "wall_over_sum": round(wall / sum(durations.values()), 3),
        "task_s": durations,
        "wait_s": waits,
        "median_wait_s": round(statistics.median(waits.values()), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2, help="score runs, one after the other")
    ap.add_argument("--publish-mode", choices=["upsert", "partitioned"], default="upsert")
    ap.add_argument(
        "--no-preload",
        action="store_true",
        help="workers without mlbatch.airflow.worker_preload (each task imports mlbatch's code itself)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import boto3
    from mlbatch.airflow.pipeline import DAGS
    from mlbatch.spec import load_spec

    from devtools import synth
    from devtools.devservers import start_mariadb, start_moto_s3, start_postgres, start_redis
    from tests.integration.airflow.airflow_stack import Canaries, Stack, airflow_env, free_port, start_airflow, today
    from tests.integration.airflow.rest import trigger

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request

    report: dict[str, Any] = {
        "devices": args.devices,
        "publish_mode": args.publish_mode,
        "worker_preload": not args.no_preload,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="mlbatch-bench-scheduler-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        canaries = Canaries()
        started = time.perf_counter()
        warehouse, labels = home / "warehouse.duckdb", home / "labels.csv"
        synth.build_warehouse(warehouse, n_devices=args.devices, n_recipes=1000, ref_date=today())
        synth.write_label_sheet_for(MODEL, warehouse, labels)
        dags = home / "dags"
        write_dags(dags, labels, args.publish_mode)
        upstream = DAGS["score"].upstream(load_spec(dags / "specs" / f"{MODEL}.yaml"))
        mariadb = start_mariadb(home)
        stack.callback(mariadb.stop)
        moto = start_moto_s3()
        stack.callback(moto.stop)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3 = {"endpoint_url": moto.endpoint, "region_name": "us-east-1"}
        boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="x", **s3).create_bucket(Bucket=bucket)
        pg = start_postgres(home, password=canaries.metadb_password)
        stack.callback(pg.stop)
        redis = start_redis(home, password=canaries.redis_password)
        stack.callback(redis.stop)
        port = free_port()
        env = airflow_env(
            home, port, dags, pg.url(), redis.url, "db+" + pg.url("postgresql+psycopg2"), canaries.ui_password
        )
        env.update(
            MLBATCH_SPECS_DIR=str(dags / "specs"),
            MLBATCH_APPDB_URL=mariadb.url,
            MLBATCH_OBJECT_STORE=f"s3://{bucket}/mlbatch",
            MLBATCH_WAREHOUSE=f"duckdb://{warehouse}",
            MLBATCH_LAUNCHER="local",
            AWS_ENDPOINT_URL=moto.endpoint,
            AWS_ENDPOINT_URL_S3=moto.endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="AKIABENCHSCHEDULER",
            AWS_SECRET_ACCESS_KEY=canaries.aws_secret,
        )
        if args.no_preload:
            env.pop("AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS", None)
        mlbatch = [str(Path(sys.executable).parent / "mlbatch"), "run", MODEL, "--ds", today().isoformat()]
        subprocess.run(
            [*mlbatch, "--stage", "labels", "--stage", "unload", "--stage", "train"],
            env={**env, "MLBATCH_HOME": str(home / "cli")},
            check=True,
            stdout=sys.stderr,
        )
        report["setup_s"] = round(time.perf_counter() - started, 1)
        log(f"{args.devices:,} devices: warehouse, labels and a production model in {report['setup_s']} s")
        st = Stack(home, f"http://127.0.0.1:{port}", env, canaries.ui_password)
        stack.callback(st.stop)
        start_airflow(st, [DAG_ID])
        with st.client() as api:
            for i in range(args.runs):
                run_id = trigger(api, DAG_ID)["dag_run_id"]

                def finished(run_id: str = run_id) -> dict | None:
                    run = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
                    if run["state"] == "failed":
                        raise RuntimeError(f"{run_id} failed:\n{st.tail()}")
                    return run if run["state"] == "success" else None

                figures = measure(api, st.wait(f"{run_id} to finish", finished, timeout=1800, every=1.0), upstream)
                figures["tables"] = "empty" if i == 0 else "steady"
                report["runs"].append(figures)
                log(f"run {i + 1}: {json.dumps(figures)}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
