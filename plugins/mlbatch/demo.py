"""``mlbatch demo``: the whole pipeline on the embedded stack, through the real Airflow DAGs.

Builds the synthetic warehouse and the label sheets (deterministic, from a seed), then runs
each model's labels, train and score DAGs for one day with ``dag.test()`` (the tasks run
in-process, exactly the task code the scheduler runs), and prints a summary. Every step is
idempotent, so a second run gives the same tables.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mlbatch.env import REPO_ROOT, Environment
from mlbatch.spec import FileSource, ModelSpec, load_all

log = logging.getLogger(__name__)
DAG_KINDS = ("labels", "train", "score")


def prepare(env: Environment, specs: list[ModelSpec]) -> None:
    """The embedded warehouse and each model's label sheet (CSV), rebuilt deterministically."""
    from mlbatch.warehouse import synth

    warehouse = Path(env.warehouse_url.removeprefix("duckdb://"))
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    synth.build_warehouse(warehouse)
    for spec in specs:
        if isinstance(spec.labels.source, FileSource):
            from mlbatch.labels.source import csv_path

            synth.write_label_sheet_for(spec.name, warehouse, csv_path(spec, env))


def airflow_environment(env: Environment) -> dict[str, str]:
    """Airflow settings for a local run: this repo's airflow.cfg, metadata DB under MLBATCH_HOME."""
    airflow_dir = env.home / "airflow"
    airflow_dir.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME", str(REPO_ROOT)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ.get(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{airflow_dir / 'airflow.db'}"
        ),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_dir / "logs"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def migrate_airflow_db(environ: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **environ},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_dags(ds: str, specs: list[ModelSpec], console: Console) -> list[tuple[str, str, str]]:
    """Run each model's DAGs for ``ds`` in order; stop a model at its first failed DAG run."""
    from airflow.dag_processing.dagbag import DagBag

    day = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            console.print(f"[red]import error[/red] {path}:\n{error}", highlight=False)
    results = []
    for spec in specs:
        for kind in DAG_KINDS:
            dag_id = f"{spec.name}__{kind}"
            dag = bag.get_dag(dag_id)
            if dag is None:
                results.append((dag_id, "missing", "the DAG did not load (see import errors)"))
                break
            console.print(f"running {dag_id} for {ds} ...", highlight=False)
            # A fixed run_after makes the run id the same on every demo: reruns are idempotent.
            run = dag.test(logical_date=day, run_after=day)
            failed = [ti.task_id for ti in run.get_task_instances() if ti.state == "failed"]
            results.append((dag_id, str(run.state), ", ".join(failed)))
            if failed or str(run.state) != "success":
                break
    return results


def run_demo(ds: str, *, verbose: bool, console: Console) -> int:
    env = Environment.from_env()
    specs = load_all(env.specs_dir)
    environ = airflow_environment(env)
    os.environ.update(environ)  # before Airflow is imported in this process
    if not verbose:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    console.print(f"embedded stack in {env.home}; models: {', '.join(s.name for s in specs)}")
    prepare(env, specs)
    migrate_airflow_db(environ)
    results = run_dags(ds, specs, console)
    table = Table("DAG", "state", "failed tasks", title=f"DAG runs for {ds}")
    for row in results:
        table.add_row(*row)
    console.print(table)
    from mlbatch.status import collect

    summary = Table("model", "labels", "production model", "predictions", "export", title="mlbatch status")
    for m in collect(env)["models"]:
        lab, prod, pred, exp = m["labels"], m["production_model"], m["predictions"], m["export"]
        summary.add_row(
            m["name"],
            f"{lab['rows']:,}" if lab else "-",
            f"{prod['version']} {prod['metric']}={prod['value']:.3f}" if prod else "-",
            f"{pred['rows']:,} ({pred['latest_ds']})" if pred else "-",
            f"{exp['rows']:,} ({exp['latest_ds']})" if exp else "-",
        )
    console.print(summary)
    ok = all(state == "success" for _, state, _ in results) and len(results) == len(specs) * len(DAG_KINDS)
    return 0 if ok else 1
