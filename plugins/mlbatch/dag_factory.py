"""Turn one model spec into its Airflow DAGs.

Three DAGs per model, because their cadences and owners differ:

* ``<model>__labels`` (often, e.g. hourly): check the sheet, gate, apply the diff. When labels
  changed it emits the ``mlbatch.<model>.labels`` asset event.
* ``<model>__train`` (monthly): unload training features, gate, train in a job, register,
  gate the model (promote or reject). Emits ``mlbatch.<model>.model`` on promotion.
* ``<model>__score`` (daily): fix the production model, unload the day's features, gate, score
  shards in jobs, gate the predictions, publish to the app DB, export to the warehouse, gate
  the export. Emits ``mlbatch.<model>.predictions``.

Every task is a thin call of a stage function in :mod:`mlbatch.stages`, the same function the
``mlbatch run`` command calls. Nothing here does I/O beyond reading the spec, and the heavy
modules are imported inside the tasks, so parsing a DAG file stays cheap.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, task

from mlbatch.spec import ModelSpec, load_spec

START = datetime(2026, 1, 1)  # noqa: DTZ001 - Airflow treats a naive start as UTC
SPECS_DIR = "specs"


def assets(model: str) -> dict[str, Asset]:
    return {kind: Asset(name=f"mlbatch.{model}.{kind}") for kind in ("labels", "model", "predictions")}


def _context(spec_path: str, context: dict[str, Any]) -> Any:
    """The stage functions' RunContext, built inside the task (never at parse time)."""
    from mlbatch.env import Environment
    from mlbatch.stages.context import RunContext

    return RunContext(
        env=Environment.from_env(),
        spec=load_spec(spec_path),
        ds=context["ds"],
        run_id=context["run_id"],
        dag_id=context["dag"].dag_id,
    )


def _call(target: str, spec_path: str, context: dict[str, Any], *args: Any) -> Any:
    """Import ``module:function`` from mlbatch.stages and call it: imported in the task only."""
    from mlbatch.stages import resolve

    return resolve(target)(_context(spec_path, context), *args)


def _stage(spec: ModelSpec, task_id: str, target: str, doc: str, *args: Any, **task_kwargs: Any) -> Any:
    """A TaskFlow task that runs one stage function and returns its small summary."""
    spec_path = str(spec.path)

    @task(task_id=task_id, doc_md=doc, **task_kwargs)
    def _run(**context: Any) -> Any:
        return _call(target, spec_path, context, *args)

    return _run


def _doc(spec: ModelSpec, what: str) -> str:
    gate, labels, checks = spec.train.gate, spec.labels, spec.features.checks
    src = labels.source
    source = f"sheet `{src.sheet}` / `{src.worksheet}`" if hasattr(src, "sheet") else f"file `{src.file}`"
    rows = [
        ("owner", spec.owner),
        ("spec", f"`{spec.path}`"),
        ("entity key", f"`{spec.entity.key}` ({spec.entity.type})"),
        ("labels", f"{source}; classes {', '.join(labels.classes)}"),
        (
            "label gate",
            f"blocked above {labels.max_invalid_fraction:.1%} invalid rows, "
            f"{labels.max_delete_fraction:.0%} deletions, or under {labels.min_rows:,} labels",
        ),
        ("features", f"`{spec.features.training_sql}`, `{spec.features.scoring_sql}`"),
        (
            "feature gate",
            f">= {checks.min_rows:,} rows, <= {checks.max_null_fraction:.0%} nulls per column, unique keys",
        ),
        (
            "model gate",
            f"{spec.train.family}: {gate.metric} >= {gate.min}, "
            f"no worse than production by more than {gate.max_regression}",
        ),
        (
            "schedules",
            f"labels `{labels.schedule}`, train `{spec.train.schedule}`, "
            f"score `{spec.score.schedule}` ({spec.score.shards} shards)",
        ),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"### {spec.name}: {what}\n\n{spec.description}\n\n| | |\n|---|---|\n{table}\n\n"
        "A failed gate task stops the run: nothing after it runs or writes. Its log lists each\n"
        "check with the observed value and the threshold.\n"
    )


def _dag(spec: ModelSpec, kind: str, schedule: Any, what: str, timeout: timedelta) -> DAG:
    return DAG(
        dag_id=f"{spec.name}__{kind}",
        description=f"{spec.name}: {what}",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,  # two runs of a model's DAG never write the same tables at once
        doc_md=_doc(spec, what),
        tags=["mlbatch", spec.name, kind],
        default_args={
            "owner": spec.owner,
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": 2.0,
            "execution_timeout": timeout,
        },
    )


def labels_dag(spec: ModelSpec) -> DAG:
    out = assets(spec.name)["labels"]
    with _dag(spec, "labels", spec.labels.schedule, "sync the label sheet", timedelta(minutes=30)) as dag:
        check = _stage(
            spec,
            "check_sheet",
            "labels:check_sheet",
            "Read the sheet once, check every row, write verdicts back, stage the accepted labels.",
        )()
        gate = _stage(
            spec,
            "labels_gate",
            "labels:labels_gate",
            "Block the sync when too many rows are invalid or too few labels remain.",
            retries=0,
        )()
        apply = _stage(
            spec,
            "apply_labels",
            "labels:apply_labels",
            "Apply only the difference in one transaction; snapshot the labels when they changed.",
        )()

        @task.short_circuit(task_id="labels_changed", doc_md="Skip the asset event when nothing changed.")
        def changed(result: dict[str, Any]) -> bool:
            return bool(result["changed"])

        @task(task_id="announce_labels", outlets=[out], doc_md=f"Emit `{out.name}` for training.")
        def announce(result: dict[str, Any]) -> dict[str, Any]:
            return result

        check >> gate >> apply
        changed(apply) >> announce(apply)
    return dag


def train_dag(spec: ModelSpec) -> DAG:
    out = assets(spec.name)["model"]
    with _dag(spec, "train", spec.train.schedule, "train, register and gate a model", timedelta(hours=6)) as dag:
        unload = _stage(
            spec,
            "unload_training",
            "features:unload",
            "UNLOAD the training query to parquet parts + manifest.",
            "train",
        )()
        fgate = _stage(
            spec,
            "features_gate",
            "features:features_gate",
            "Rows, null fraction per column, key uniqueness.",
            "train",
            retries=0,
        )()
        job = _stage(spec, "train", "train:train", "Run the training job (container or local process).")()
        reg = _stage(spec, "register", "train:register", "Register the version with metrics and lineage.")()
        mgate = _stage(
            spec,
            "model_gate",
            "train:model_gate",
            "Promote if the metric clears the spec's minimum and does not regress production.",
            retries=0,
            outlets=[out],
        )()
        unload >> fgate >> job >> reg >> mgate
    return dag


def score_dag(spec: ModelSpec) -> DAG:
    out = assets(spec.name)["predictions"]
    with _dag(spec, "score", spec.score.schedule, "score the day and publish", timedelta(hours=2)) as dag:
        model = _stage(
            spec, "resolve_model", "score:resolve_model", "Fix the production model version for the whole run."
        )()
        unload = _stage(
            spec,
            "unload_scoring",
            "features:unload",
            "UNLOAD the day's scoring query to parquet parts + manifest.",
            "score",
        )()
        fgate = _stage(
            spec,
            "features_gate",
            "features:features_gate",
            "Rows, nulls, key uniqueness, and the model's feature schema.",
            "score",
            retries=0,
        )()
        spec_path = str(spec.path)

        @task(task_id="score", doc_md="One scoring job per shard of the manifest.")
        def score_shard(shard: int, **context: Any) -> Any:
            return _call("score:score_shard", spec_path, context, shard)

        shards = score_shard.expand(shard=list(range(spec.score.shards)))
        pgate = _stage(
            spec,
            "predictions_gate",
            "score:predictions_gate",
            "Count equals the scoring input, no nulls, scores in range, one row per key.",
            retries=0,
        )()
        pub = _stage(
            spec, "publish", "publish:publish", "Upsert into the app DB in one transaction; never replace a newer day."
        )()
        exp = _stage(spec, "export", "publish:export", "Replace the day in the warehouse.")()
        egate = _stage(
            spec,
            "export_gate",
            "publish:export_gate",
            "The warehouse's count for the day equals the published count.",
            retries=0,
            outlets=[out],
        )()
        model >> unload >> fgate >> shards >> pgate >> pub >> exp >> egate
    return dag


def build(spec: ModelSpec) -> dict[str, DAG]:
    return {d.dag_id: d for d in (labels_dag(spec), train_dag(spec), score_dag(spec))}


def dags_for(dag_file: str) -> dict[str, DAG]:
    """The DAGs of the spec named like the DAG file: ``dags/<model>.py`` → ``dags/specs/<model>.yaml``.

    One DAG file per spec keeps a broken spec an import error of its own file: the other
    models' DAGs still load.
    """
    path = Path(dag_file)
    return build(load_spec(path.parent / SPECS_DIR / f"{path.stem}.yaml"))
