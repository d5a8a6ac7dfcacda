"""Turn one model spec into its Airflow DAGs.

Three DAGs per model, because their cadences and owners differ:

* ``<model>__labels`` (``labels.schedule``, e.g. hourly): check the sheet, gate, apply the diff.
  When labels changed it emits the ``mlbatch.<model>.labels`` asset event.
* ``<model>__train`` (``train.schedule``, e.g. monthly, *or* when the labels asset changes):
  unload training features, gate, train in a job, register, gate the model (promote or
  reject). Emits ``mlbatch.<model>.model`` on promotion.
* ``<model>__score`` (``score.schedule``, e.g. daily): fix the model version, unload the day's
  features, gate, score shards in jobs, gate the predictions, publish to the app DB, export to
  the warehouse, gate the export. Emits ``mlbatch.<model>.predictions``.

Every task is an operator of :mod:`mlbatch.operators` around a stage function of
:mod:`mlbatch.stages`, the same function the ``mlbatch run`` command calls: jobs and warehouse
statements (unloads, train, score shards, export) run as :class:`ExternalWorkOperator` (stopped
by ``on_kill``, deferred to the triggerer on ECS and Redshift), the rest as
:class:`StageOperator`. Nothing here does I/O beyond reading the spec, and the heavy modules are
imported inside the tasks, so parsing a DAG file stays cheap.

A run's day is its logical date, else the UTC day of its ``run_after`` (asset-triggered runs,
API runs with ``"logical_date": null``): :func:`mlbatch.operators.run_day`.

Run params (trigger form, ``dag_run_conf`` of a backfill): ``dry_run`` on every DAG runs the
reads and gates and skips the tasks in :data:`WRITERS`; ``model_version`` (score) scores with a
registered version instead of production; ``force_retrain`` (train) trains a fresh version.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from mlbatch import callbacks
from mlbatch.approval import PromotionApprovalOperator
from mlbatch.operators import ExternalWorkOperator, StageOperator
from mlbatch.pools import GPU_POOL
from mlbatch.runparams import DRY_RUN, WRITERS
from mlbatch.spec import ModelSpec, Resources, load_spec

START = datetime(2026, 1, 1)  # noqa: DTZ001 - Airflow treats a naive start as UTC
SPECS_DIR = "specs"
TIMEZONE = "UTC"

# Cron for the spec's presets: a CronTriggerTimetable takes cron only, and runs *at* the time
# (logical date = trigger time), so the daily run of 2026-11-22 00:00 scores ds 2026-11-22.
PRESET_CRON = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}

MODEL_VERSION = "model_version"
FORCE_RETRAIN = "force_retrain"

# Retries back off exponentially from RETRY_DELAY (1, 2, 4 ... minutes, capped); gates never
# retry: a failed check is a verdict, not a transient error.
RETRIES = 2
RETRY_DELAY = timedelta(minutes=1)
MAX_RETRY_DELAY = timedelta(minutes=30)


def assets(model: str) -> dict[str, Asset]:
    return {kind: Asset(name=f"mlbatch.{model}.{kind}") for kind in ("labels", "model", "predictions", "retrain")}


def cron(expr: str) -> str:
    """The cron expression of a spec schedule (presets translated; cron passed through)."""
    return PRESET_CRON.get(expr, expr)


def timetable(expr: str | None) -> Any:
    """The DAG schedule of a spec schedule: None (manual only), "@once", or a cron trigger."""
    if expr is None or expr == "@once":
        return expr
    return CronTriggerTimetable(cron(expr), timezone=TIMEZONE)


def train_schedule(spec: ModelSpec) -> Any:
    """On the spec's time schedule OR whenever the labels asset gets an event (labels changed)."""
    labels: Any = assets(spec.name)["labels"]
    if spec.monitoring.retrain_on_degradation:
        # The labels DAG asks for a fresh version when production degrades on late labels.
        labels = labels | assets(spec.name)["retrain"]
    if spec.train.schedule in (None, "@once"):
        return labels
    return AssetOrTimeSchedule(timetable=timetable(spec.train.schedule), assets=labels)


def _params(kind: str) -> dict[str, Param]:
    params = {
        DRY_RUN: Param(
            False,
            type="boolean",
            title="Dry run",
            description="Run the reads and every gate before a writer, write nothing: "
            + ", ".join(sorted(WRITERS))
            + " are skipped.",
        )
    }
    if kind == "score":
        params[MODEL_VERSION] = Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            title="Model version",
            description="Score with this registered version (e.g. 20261101-1a2b3c4d) instead of the production "
            "model; checked against the registry when the run starts. Empty: production at the start of each run "
            "(a backfill of N days uses the current production model for every day).",
        )
    if kind == "train":
        params[FORCE_RETRAIN] = Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Train and register a fresh version even when labels, query, parameters and code are "
            "unchanged (the run id joins the version hash). It is promoted only if it passes the model gate.",
        )
    return params


def _stage(
    spec: ModelSpec, task_id: str, target: str, doc: str, *args: Any, report: str | None = None, **task_kwargs: Any
) -> StageOperator:
    """A task that runs one stage function and returns its small summary."""
    return StageOperator(
        task_id=task_id,
        spec_path=str(spec.path),
        target=target,
        stage_args=args,
        report=report,
        doc_md=_task_doc(task_id, doc, task_kwargs, report),
        **task_kwargs,
    )


def _external(spec: ModelSpec, task_id: str, target: str, doc: str, *args: Any, **task_kwargs: Any) -> Any:
    """A task whose work runs outside the worker (job, warehouse statement); on_kill stops it."""
    return ExternalWorkOperator(
        task_id=task_id,
        spec_path=str(spec.path),
        target=target,
        stage_args=args,
        doc_md=_task_doc(task_id, doc + STOPS, task_kwargs, None),
        **task_kwargs,
    )


STOPS = (
    " Stopping the task (mark failed, clear, its timeout) stops the work it started; on ECS and "
    "Redshift the wait runs in the triggerer, not on a worker slot."
)


def _gpu(resources: Resources) -> dict[str, Any]:
    """Pool arguments of a job task: only jobs with ``gpu > 0`` share the ``mlbatch_gpu`` pool, one
    slot per GPU; a CPU job (scoring, by default) never waits behind training for a GPU slot."""
    gpus = resources.gpu
    return {"pool": GPU_POOL, "pool_slots": gpus} if gpus else {}


def _sizing(res: Resources) -> str:
    pool = f"; pool `{GPU_POOL}` ({res.gpu} slot(s) per job)" if res.gpu else ""
    return f"{res.gpu} GPU, {res.vcpu:g} vCPU, {res.memory_gib:g} GiB{pool}"


def _task_doc(task_id: str, doc: str, task_kwargs: dict[str, Any], report: str | None) -> str:
    notes = []
    if task_id in WRITERS:
        notes.append("Writes: skipped in a dry run.")
    if task_kwargs.get("retries") == 0:
        notes.append("A gate: never retried; its log and error list every check with value and threshold.")
    if "pool" in task_kwargs:
        notes.append(f"Pool `{task_kwargs['pool']}`, {task_kwargs['pool_slots']} slot(s) (one per GPU).")
    if report:
        notes.append(f"Writes the {report.replace('_', ' ')} afterwards; its URI is in the log and the XCom.")
    return doc + ("\n\n" + " ".join(notes) if notes else "")


def _doc(spec: ModelSpec, kind: str, what: str, schedule: str) -> str:
    gate, labels, checks = spec.train.gate, spec.labels, spec.features.checks
    src = labels.source
    source = f"sheet `{src.sheet}` / `{src.worksheet}`" if hasattr(src, "sheet") else f"file `{src.file}`"
    rows = [
        ("owner", spec.owner),
        ("spec", f"`{spec.path}`"),
        ("schedule", schedule),
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
        ("prediction gate", "count = scoring input, no null keys or scores, scores in [0, 1], one row per key"),
        ("export gate", "warehouse count for the day = published count"),
        (
            "all schedules",
            f"labels `{labels.schedule}`, train `{spec.train.schedule}` or on new labels, "
            f"score `{spec.score.schedule}` ({spec.score.shards} shards)",
        ),
        ("train job", _sizing(spec.train.resources)),
        ("score jobs", _sizing(spec.score.resources)),
        ("retries", f"{RETRIES}, exponential backoff from {RETRY_DELAY}; gates 0"),
        ("failure alerts", f"POST to the HTTP connection `{callbacks.CONN_ID}` (none: a log line)"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    params = "\n".join(f"- `{name}`: {p.description}" for name, p in _params(kind).items())
    return (
        f"### {spec.name}: {what}\n\n{spec.description}\n\n| | |\n|---|---|\n{table}\n\n"
        f"**Params** (trigger form; `dag_run_conf` of a backfill):\n\n{params}\n\n"
        "A failed gate task stops the run: nothing after it runs or writes. Its log lists each\n"
        "check with the observed value and the threshold. Backfills are safe: a day's publish never\n"
        "replaces a newer day's prediction, and a rerun of a day replaces that day only.\n"
    )


def _dag(spec: ModelSpec, kind: str, schedule: Any, what: str, timeout: timedelta, schedule_text: str) -> DAG:
    return DAG(
        dag_id=f"{spec.name}__{kind}",
        description=f"{spec.name}: {what}",
        schedule=schedule,
        start_date=START,
        catchup=False,  # history is filled by an explicit backfill, never by a surprise catch-up
        max_active_runs=1,  # two runs of a model's DAG never write the same tables at once
        doc_md=_doc(spec, kind, what, schedule_text),
        tags=["mlbatch", spec.name, kind],
        params=_params(kind),
        default_args={
            "owner": spec.owner,
            "retries": RETRIES,
            "retry_delay": RETRY_DELAY,
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": MAX_RETRY_DELAY,
            "execution_timeout": timeout,
            "on_failure_callback": [callbacks.on_task_failure],
        },
    )


def labels_dag(spec: ModelSpec) -> DAG:
    out = assets(spec.name)["labels"]
    schedule = f"`{spec.labels.schedule}`" + (
        f" (cron `{cron(spec.labels.schedule)}`, UTC)" if spec.labels.schedule else ""
    )
    timeout = timedelta(minutes=spec.labels.timeout_minutes)
    with _dag(spec, "labels", timetable(spec.labels.schedule), "sync the label sheet", timeout, schedule) as dag:
        check = _stage(
            spec,
            "check_sheet",
            "labels:check_sheet",
            "Read the sheet once, check every row, write verdicts back, stage the accepted labels.",
        )
        gate = _stage(
            spec,
            "labels_gate",
            "labels:labels_gate",
            "Block the sync when too many rows are invalid or too few labels remain.",
            retries=0,
        )
        apply = _stage(
            spec,
            "apply_labels",
            "labels:apply_labels",
            "Apply only the difference in one transaction; snapshot the labels when they changed.",
        )

        @task.short_circuit(task_id="labels_changed", doc_md="Skip the asset event when nothing changed.")
        def changed(result: dict[str, Any]) -> bool:
            return bool(result["changed"])

        @task(
            task_id="announce_labels",
            outlets=[out],
            doc_md=f"Emit `{out.name}` with the sync id in its extra: training runs on that sync's labels.",
        )
        def announce(result: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            outlet_events[out].extra = {"sync_id": result["sync_id"]}
            return result

        realized = _stage(
            spec,
            "realized_performance",
            "realized:realized_performance",
            f"Measure each published day of the last {spec.monitoring.lookback_days} against the labels that "
            "arrived after its version was trained (gate metric, labelled rows, 95% interval) into "
            f"`ml_realized_performance`; below `train.gate.min` on >= {spec.monitoring.min_rows} rows: "
            + ("alert on the failure webhook and flag the version `degraded`." if spec.monitoring.alert else "")
            + (" Then request a retrain." if spec.monitoring.retrain_on_degradation else ""),
        )

        check >> gate >> apply >> realized
        changed(apply.output) >> announce(apply.output)
        if spec.monitoring.retrain_on_degradation:
            retrain = assets(spec.name)["retrain"]

            @task.short_circuit(task_id="degraded", doc_md="Skip the retrain request when no day degraded.")
            def degraded(result: dict[str, Any]) -> bool:
                return bool(result["retrain"])

            @task(
                task_id="request_retrain",
                outlets=[retrain],
                doc_md=f"Emit `{retrain.name}`: the train DAG trains a fresh version (as `force_retrain`).",
            )
            def request_retrain(result: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
                outlet_events[retrain].extra = {"sync_id": result["sync_id"], "degraded": result["degraded"]}
                return result

            degraded(realized.output) >> request_retrain(realized.output)
    return dag


def train_dag(spec: ModelSpec) -> DAG:
    out = assets(spec.name)["model"]
    when = spec.train.schedule
    schedule = (f"`{when}` (cron `{cron(when)}`, UTC) or " if when not in (None, "@once") else "") + (
        f"when `{assets(spec.name)['labels'].name}` changes"
    )
    timeout = timedelta(minutes=spec.train.timeout_minutes)
    with _dag(spec, "train", train_schedule(spec), "train, register and gate a model", timeout, schedule) as dag:
        unload = _external(
            spec,
            "unload_training",
            "features:Unload",
            "UNLOAD the training query to parquet parts + manifest.",
            "train",
        )
        fgate = _stage(
            spec,
            "features_gate",
            "features:features_gate",
            "Rows, null fraction per column, key uniqueness.",
            "train",
            retries=0,
        )
        job = _external(
            spec,
            "train",
            "train:TrainJob",
            "Run the training job (container or local process) on the run's label snapshot (the one the "
            "triggering label change names); `force_retrain` makes a fresh version.",
            **_gpu(spec.train.resources),
        )
        reg = _stage(spec, "register", "train:register", "Register the version with metrics and lineage.")
        approval = spec.train.approval
        mgate = _stage(
            spec,
            "model_gate",
            "train:model_gate",
            "Pass the candidate if the metric clears the spec's minimum and does not regress production; "
            + ("it then waits for a person's approval." if approval.required else "promote it."),
            retries=0,
            outlets=[] if approval.required else [out],
            report="training_report",
        )
        unload >> fgate >> job >> reg >> mgate
        if approval.required:
            approve = PromotionApprovalOperator(
                task_id="approve_promotion",
                spec_path=str(spec.path),
                response_timeout=timedelta(hours=approval.timeout_hours),
                retries=0,
                doc_md="A person approves the candidate (Required actions): it against production, with its "
                f"report. Approve promotes; Reject, or no answer within {approval.timeout_hours:g} h, keeps the "
                "champion. The registry records who decided, when, and why.",
            )

            @task(task_id="announce_model", outlets=[out], doc_md=f"Emit `{out.name}`: the approved version is live.")
            def announce_model() -> None:
                return None

            mgate >> approve >> announce_model()
    return dag


def score_dag(spec: ModelSpec) -> DAG:
    out = assets(spec.name)["predictions"]
    when = spec.score.schedule
    schedule = f"`{when}`" + (f" (cron `{cron(when)}`, UTC)" if when not in (None, "@once") else "")
    timeout = timedelta(minutes=spec.score.timeout_minutes)
    with _dag(spec, "score", timetable(spec.score.schedule), "score the day and publish", timeout, schedule) as dag:
        model = _stage(
            spec,
            "resolve_model",
            "score:resolve_model",
            "Fix the model version for the whole run: production, or the `model_version` param.",
        )
        unload = _external(
            spec,
            "unload_scoring",
            "features:Unload",
            "UNLOAD the day's scoring query to parquet parts + manifest.",
            "score",
        )
        fgate = _stage(
            spec,
            "features_gate",
            "features:features_gate",
            "Rows, nulls, key uniqueness, and the model's feature schema.",
            "score",
            retries=0,
        )
        gpu = _gpu(spec.score.resources)
        shards = ExternalWorkOperator.partial(
            task_id="score",
            spec_path=str(spec.path),
            target="score:ScoreShard",
            doc_md=_task_doc("score", "One scoring job per shard of the manifest." + STOPS, gpu, None),
            **gpu,
        ).expand(stage_args=[[shard] for shard in range(spec.score.shards)])
        pgate = _stage(
            spec,
            "predictions_gate",
            "score:predictions_gate",
            "Count equals the scoring input, no nulls, scores in range, one row per key.",
            retries=0,
        )
        # One publish and one export of a model at a time, across all its runs (a backfill runs
        # up to its max_active_runs days at once): they take turns instead of queueing on the
        # app DB's lock or the warehouse. Order does not matter: an older day never replaces a
        # newer row, and the export replaces its own day only.
        pub = _stage(
            spec,
            "publish",
            "publish:publish",
            "Publish the day to the app DB atomically; never replace a newer day. One at a time per model.",
            report="scoring_summary",
            max_active_tis_per_dag=1,
        )
        exp = _external(
            spec,
            "export",
            "publish:Export",
            "Replace the day in the warehouse. One at a time per model.",
            max_active_tis_per_dag=1,
        )
        egate = _stage(
            spec,
            "export_gate",
            "publish:export_gate",
            "The warehouse's count for the day equals the published count.",
            retries=0,
            outlets=[out],
        )
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
