"""``mlbatch demo``: the whole pipeline on the embedded stack, through the real Airflow DAGs.

Builds the synthetic warehouse and the label sheets (deterministic, from a seed), then runs
each model's labels, train and score DAGs for one day with ``dag.test()`` (the tasks run
in-process, exactly the task code the scheduler runs), and prints a summary. Every step is
idempotent, so a second run gives the same tables.

Late labels: once a day is published, analysts label some scored entities they had not
labelled (from the synthetic truth, :func:`devtools.synth.append_late_labels`); the
demo then runs the labels DAG of the next day, whose ``realized_performance`` task measures the
published day. A second demo writes the sheet with those late labels from the start (the day is
already published): its syncs change nothing, and training reuses its run's fixed label
snapshot, so the tables stay as they were.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlbatch.backends.embedded import airflow_environment
from mlbatch.backends.env import Environment
from mlbatch.errors import UsageError
from mlbatch.spec import FileSource, ModelSpec, load_all
from rich.console import Console
from rich.table import Table
from rich.text import Text

log = logging.getLogger(__name__)
DAG_KINDS = ("labels", "train", "score")


LATE_LABELS = 2_000  # scored, unlabelled entities the analysts label after the day is published


def plan(env: Environment, specs: list[ModelSpec]) -> tuple[list[ModelSpec], list[tuple[str, str]]]:
    """The specs the demo can run, and ``(model, why)`` for each it skips.

    A model runs when its labels are a CSV file (a Google Sheet needs an account) and the demo
    has its data: synthetic (``devtools.synth`` knows the model), or yours, a label file already
    at the spec's path under MLBATCH_HOME (then its source tables are yours to put in the
    embedded warehouse, e.g. with SQL). Any other model is skipped, saying why; it is not a failure.
    """
    from mlbatch.labels.source import csv_path

    from devtools import synth

    runnable, skipped = [], []
    for spec in specs:
        if not isinstance(spec.labels.source, FileSource):
            skipped.append(
                (spec.name, "its labels are a Google Sheet; the demo reads label files (labels.source.file)")
            )
        elif spec.name in synth.LABEL_SHEETS or csv_path(spec, env).is_file():
            runnable.append(spec)
        else:
            skipped.append(
                (
                    spec.name,
                    f"no synthetic data for it in devtools/synth.py and no label file {csv_path(spec, env)}; "
                    f"put the labels there and its source tables in {env.warehouse_url}",
                )
            )
    return runnable, skipped


def prepare(env: Environment, specs: list[ModelSpec], ds: str) -> None:
    """The synthetic source tables and label sheets (CSV) of the models ``devtools.synth``
    knows, rebuilt deterministically; other tables in the warehouse and other models' label
    files are left as they are."""
    from mlbatch.labels.source import csv_path

    from devtools import synth

    synthetic = [s for s in specs if s.name in synth.LABEL_SHEETS]
    if not synthetic:
        return
    warehouse = Path(env.warehouse_url.removeprefix("duckdb://"))
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    synth.build_warehouse(warehouse)
    for spec in synthetic:
        synth.write_label_sheet_for(spec.name, warehouse, csv_path(spec, env))
        late_labels(env, spec, ds)


def late_labels(env: Environment, spec: ModelSpec, ds: str) -> int:
    """Append the late labels of the published day ``ds`` to the model's sheet: every k-th scored
    entity the sheet does not label yet, LATE_LABELS of them. Nothing before the day is published
    (or for a model without synthetic truth), nor when the sheet holds them already."""
    import csv
    import unicodedata

    from mlbatch.backends.appdb import schema
    from mlbatch.labels.source import csv_path
    from sqlalchemy import select

    from devtools import synth

    if spec.name not in synth.LATE_TRUTH or not env.appdb.has_table(spec.predictions_table):
        return 0
    sheet = csv_path(spec, env)
    with open(sheet, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if any(len(row) > 2 and row[2] == synth.LATE_ANALYST for row in rows):
        return 0  # this sheet has them already (the first sync of a second demo)
    # Every key the sheet holds as the check reads it, rejected rows too (another row for such a
    # key makes a conflict, not a late label).
    labelled = {unicodedata.normalize("NFKC", row[0]).strip() for row in rows}
    table = schema.predictions_table(spec.name, spec.entity.type)
    with env.appdb.connect() as conn:
        scored = [
            k
            for (k,) in conn.execute(
                select(table.c.entity_key).where(table.c.ds == datetime.fromisoformat(ds).date()).order_by("entity_key")
            )
            if str(k) not in labelled
        ]
    if not scored:
        return 0
    step = max(1, len(scored) // LATE_LABELS)
    warehouse = Path(env.warehouse_url.removeprefix("duckdb://"))
    return synth.append_late_labels(spec.name, warehouse, sheet, scored[::step][:LATE_LABELS])


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
    # The DAG files sit beside the specs' folder (dags/ and dags/specs/), wherever that is.
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            console.print(Text.assemble(("import error", "red"), f" {path}:\n{error}"))  # a Text: never markup
    results = []
    for spec in specs:
        for kind in DAG_KINDS:
            dag_id = f"{spec.name}__{kind}"
            dag = bag.get_dag(dag_id)
            if dag is None:
                results.append((dag_id, "missing", "the DAG did not load (see import errors)"))
                break
            console.print(f"running {dag_id} for {ds} ...", highlight=False, markup=False)
            # A fixed run_after makes the run id the same on every demo: reruns are idempotent.
            run = dag.test(logical_date=day, run_after=day)
            failed = [ti.task_id for ti in run.get_task_instances() if ti.state == "failed"]
            results.append((dag_id, str(run.state), ", ".join(failed)))
            if failed or str(run.state) != "success":
                break
        else:
            results.append(_late_label_sync(bag, spec, day, console))
    return results


def _late_label_sync(bag: Any, spec: ModelSpec, day: datetime, console: Console) -> tuple[str, str, str]:
    """The next day's label sync, after analysts labelled some of the day's scored entities."""
    env = Environment.from_env()
    added = late_labels(env, spec, day.date().isoformat())
    next_day = day + timedelta(days=1)
    dag_id = f"{spec.name}__labels"
    console.print(
        f"running {dag_id} for {next_day.date()} ({added:,} late labels) ...",
        highlight=False,
        markup=False,
    )
    run = bag.get_dag(dag_id).test(logical_date=next_day, run_after=next_day)
    failed = [ti.task_id for ti in run.get_task_instances() if ti.state == "failed"]
    return (f"{dag_id} (late labels)", str(run.state), ", ".join(failed))


def chosen_specs(env: Environment, models: list[str] | None) -> list[ModelSpec]:
    """Every spec, or only the named models (``mlbatch demo --model NAME``)."""
    specs = load_all(env.specs_dir)
    if not models:
        return specs
    known = {s.name for s in specs}
    unknown = [m for m in models if m not in known]
    if unknown:
        raise UsageError(
            f"no spec for model {', '.join(unknown)} in {env.specs_dir}; known: {', '.join(sorted(known))}"
        )
    return [s for s in specs if s.name in models]


def run_demo(ds: str, *, verbose: bool, console: Console, models: list[str] | None = None) -> int:
    env = Environment.from_env()
    environ = airflow_environment(env)
    os.environ.update(environ)  # before Airflow is imported in this process
    if not verbose:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    specs, skipped = plan(env, chosen_specs(env, models))
    console.print(f"embedded stack in {env.home}", markup=False)  # a path of its own line: copyable whole
    console.print(f"models: {', '.join(s.name for s in specs) or 'none'}", markup=False)
    for name, why in skipped:
        console.print(Text.assemble(("skipped", "yellow"), f" {name}: {why}"))
    prepare(env, specs, ds)
    migrate_airflow_db(environ)
    results = run_dags(ds, specs, console)
    table = Table("DAG", "state", "failed tasks", title=f"DAG runs for {ds}")
    for row in results:
        table.add_row(*map(Text, row))  # Text cells: a task id or state is printed as it is, never as markup
    console.print(table)
    from mlbatch.reporting.status import collect
    from mlbatch.reporting.status_view import render

    # The same per-model blocks as `mlbatch status`: readable at 80 columns, nothing elided.
    console.print(Text("mlbatch status", style="bold"))
    console.print(render(collect(env)))
    ok = all(state == "success" for _, state, _ in results) and len(results) == len(specs) * (len(DAG_KINDS) + 1)
    return 0 if ok else 1
