"""Turn one model spec into its Airflow DAGs.

Three DAGs per model (``<model>__labels``, ``__train``, ``__score``), because their cadences
and owners differ. Their steps, in order, are declared once in :mod:`mlbatch.airflow.pipeline` (the
same declaration ``mlbatch run`` walks); this module only turns each declared step into a task:
:class:`~mlbatch.airflow.operators.StageOperator` for stages and gates,
:class:`~mlbatch.airflow.operators.ExternalWorkOperator` for jobs and warehouse statements (stopped by
``on_kill``, deferred to the triggerer on ECS and Redshift; a per-shard step is a mapped task),
:class:`~mlbatch.airflow.approval.PromotionApprovalOperator` for an approval, and two TaskFlow tasks for
a step's asset event (a short-circuit on its result, then the outlet). It adds what Airflow alone
needs: schedules from the spec, retries, timeouts, the failure callback, pools and the docs.

Nothing here does I/O beyond reading the spec, and the heavy modules are imported inside the
tasks, so parsing a DAG file stays cheap.

A run's day is its logical date, else the UTC day of its ``run_after`` (asset-triggered runs,
API runs with ``"logical_date": null``): :func:`mlbatch.airflow.operators.run_day`. The run params of
the trigger form (and ``dag_run_conf`` of a backfill) are built from :mod:`mlbatch.spec.runparams`.
"""

from __future__ import annotations

import functools
import operator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, task

from mlbatch.airflow import callbacks, pipeline, pools
from mlbatch.airflow.approval import PromotionApprovalOperator
from mlbatch.airflow.operators import ExternalWorkOperator, StageOperator
from mlbatch.airflow.pools import GPU_POOL
from mlbatch.spec import ModelSpec, Resources, SheetSource, load_spec, runparams

if TYPE_CHECKING:
    from airflow.sdk.definitions.asset import BaseAsset
    from airflow.sdk.definitions.dag import ScheduleArg
    from airflow.sdk.types import Operator, OutletEventAccessorsProtocol

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


def timetable(expr: str | None, model: str = "") -> CronTriggerTimetable | str | None:
    """The DAG schedule of a spec schedule: None (manual only), "@once", or a cron trigger (moved by
    the model's offset within ``MLBATCH_SCHEDULE_WINDOW_MINUTES``: a fleet's runs spread out)."""
    if expr is None or expr == "@once":
        return expr
    return cron_timetable(expr, model)


def cron_timetable(expr: str, model: str = "") -> CronTriggerTimetable:
    """The cron trigger of a time schedule (neither None nor "@once"): see :func:`timetable`."""
    return CronTriggerTimetable(spread_cron(expr, model), timezone=TIMEZONE)


def spread_cron(expr: str, model: str) -> str:
    """The cron a model's schedule runs on: the spec's, moved by :func:`mlbatch.airflow.pools.spread`."""
    return pools.spread(cron(expr), model, pools.window_minutes()) if model else cron(expr)


def _params(kind: str) -> dict[str, Param]:
    """The trigger form's params of a DAG kind, from :data:`mlbatch.spec.runparams.PARAMS`."""
    writers = ", ".join(sorted(pipeline.WRITERS))
    return {
        p.name: Param(
            p.default,
            type=p.type if p.default is not None else ["null", p.type],
            title=p.title,
            description=p.description.format(writers=writers),
            **_pattern(p.pattern),
        )
        for p in runparams.PARAMS
        if kind in p.dags
    }


def _pattern(pattern: str | None) -> dict[str, Any]:
    """A string param's JSON-schema ``pattern`` keyword, if it has one (Param's ``**kwargs``)."""
    return {"pattern": pattern} if pattern else {}


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


def _task_doc(writes: bool, doc: str, task_kwargs: dict[str, Any], report: str | None) -> str:
    notes = []
    if writes:
        notes.append("Writes: skipped in a dry run.")
    if task_kwargs.get("retries") == 0:
        notes.append("A gate: never retried; its log and error list every check with value and threshold.")
    if "pool" in task_kwargs:
        per = " (one per GPU)" if task_kwargs["pool"] == GPU_POOL else ""
        notes.append(f"Pool `{task_kwargs['pool']}`, {task_kwargs['pool_slots']} slot(s){per}.")
    if report:
        notes.append(f"Writes the {report.replace('_', ' ')} afterwards; its URI is in the log and the XCom.")
    return doc + ("\n\n" + " ".join(notes) if notes else "")


def _doc(spec: ModelSpec, kind: str, what: str, schedule: str) -> str:
    gate, labels, checks = spec.train.gate, spec.labels, spec.features.checks
    src = labels.source
    source = f"sheet `{src.sheet}` / `{src.worksheet}`" if isinstance(src, SheetSource) else f"file `{src.file}`"
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
            f"labels `{labels.schedule}`, train `{spec.train.schedule}` or when decide_retrain says so, "
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


# A label sync is short and an analyst waits for its verdicts: its tasks go ahead of the queued
# tasks of a fleet's score and train runs (the scheduler orders queued work by priority weight,
# summed downstream), so an hourly sync during a midnight burst of twenty score runs does not
# wait for all of them (tests/integration/airflow/test_fleet.py measures it).
PRIORITY = {"labels": 10}


def _dag(spec: ModelSpec, kind: str, schedule: ScheduleArg, what: str, schedule_text: str) -> DAG:
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
            # Per DAG from its spec section (labels, train, score): timeout_minutes.
            "execution_timeout": timedelta(minutes=getattr(spec, kind).timeout_minutes),
            "on_failure_callback": [callbacks.on_task_failure],
            "priority_weight": PRIORITY.get(kind, 1),
        },
    )


def _schedule(spec: ModelSpec, kind: str) -> tuple[ScheduleArg, str]:
    """The DAG's schedule and how its doc says it: the spec's time schedule, or an event of one
    of the DAG's declared triggers (training: on its cron OR when labels changed)."""
    when: str | None = getattr(spec, kind).schedule
    timed = None if when is None or when == "@once" else when  # a time schedule: its cron
    text = f"`{when}`" + (f" (cron `{spread_cron(timed, spec.name)}`, UTC)" if timed is not None else "")
    triggers = [assets(spec.name)[t.asset] for t in pipeline.DAGS[kind].triggers if t.when(spec)]
    if not triggers:
        return timetable(when, spec.name), text
    events: BaseAsset = functools.reduce(operator.or_, triggers)  # an AssetAny (one asset: itself)
    changed = f"when `{triggers[0].name}` changes"
    if timed is None:
        return events, changed
    return AssetOrTimeSchedule(timetable=cron_timetable(timed, spec.name), assets=events), f"{text} or {changed}"


def _task_kwargs(spec: ModelSpec, step: pipeline.Step) -> dict[str, Any]:
    """Operator arguments a step's declaration implies (the gate's retries, the job's pool, ...)."""
    kwargs: dict[str, Any] = {}
    if step.kind == "gate":
        kwargs["retries"] = 0
    if step.job is not None:
        kwargs.update(_gpu(getattr(spec, step.job).resources))
    elif step.pool is not None and pools.shared_pools_on():
        kwargs.update(pool=step.pool, pool_slots=1)
    if step.outlets:
        kinds = step.outlets if step.outlets_when(spec) else ()
        kwargs["outlets"] = [assets(spec.name)[kind] for kind in kinds]
    if step.one_at_a_time:
        kwargs["max_active_tis_per_dag"] = 1
    return kwargs


def _task(spec: ModelSpec, step: pipeline.Step) -> Operator:
    """The Airflow task of one declared step."""
    if step.kind == "approval":
        return PromotionApprovalOperator(
            task_id=step.name,
            spec_path=str(spec.path),
            response_timeout=timedelta(hours=spec.train.approval.timeout_hours),
            retries=0,
            doc_md=step.describe(spec),
        )
    kwargs = _task_kwargs(spec, step)
    external = step.kind == "external"
    doc = _task_doc(step.writes, step.describe(spec) + (STOPS if external else ""), kwargs, step.report)
    common: dict[str, Any] = {"task_id": step.name, "spec_path": str(spec.path), "target": step.call, "doc_md": doc}
    common |= {"writes": step.writes, "trigger_rule": TriggerRule(step.trigger_rule), **kwargs}
    if step.per_shard:
        shards = [[*step.args, shard] for shard in range(spec.score.shards)]
        return ExternalWorkOperator.partial(**common).expand(stage_args=shards)
    if external:
        return ExternalWorkOperator(stage_args=step.args, **common)
    return StageOperator(stage_args=step.args, report=step.report, **common)


def _announce(spec: ModelSpec, announce: pipeline.Announce, after: Operator) -> None:
    """Emit the model's asset event after a task (only when its result says so, with ``check``)."""
    asset = assets(spec.name)[announce.asset]

    @task(task_id=announce.task_id, outlets=[asset], doc_md=announce.doc.format(asset=asset.name))
    def emit(
        result: dict[str, Any] | None = None, *, outlet_events: OutletEventAccessorsProtocol | None = None
    ) -> dict[str, Any] | None:
        if announce.extra and result is not None:
            assert outlet_events is not None  # Airflow passes it: a context key, and the task has outlets
            outlet_events[asset].extra = {key: result[key] for key in announce.extra}
        return result

    # An XComArg stands for the upstream result at run time; Airflow's @task types the call with
    # the function's own parameters.
    emitted = emit(after.output) if announce.extra else emit()  # type: ignore[arg-type]
    if announce.check is None:
        after >> emitted
        return

    @task.short_circuit(task_id=announce.check, doc_md=announce.check_doc)
    def check(result: dict[str, Any]) -> bool:
        return bool(result[announce.key])

    check(after.output) >> emitted  # type: ignore[arg-type]  # an XComArg, as for emit


def _build(spec: ModelSpec, kind: str) -> DAG:
    """One DAG of a model: its declared steps, each after those it waits for, each announcing its asset event."""
    steps = pipeline.DAGS[kind]
    schedule, text = _schedule(spec, kind)
    upstream = steps.upstream(spec)
    with _dag(spec, kind, schedule, steps.what, text) as dag:
        tasks: dict[str, Operator] = {}
        for step in steps.steps:
            if step.name not in upstream:  # its `when` leaves it out for this spec
                continue
            tasks[step.name] = current = _task(spec, step)
            for name in upstream[step.name]:
                tasks[name] >> current
            if step.announce is not None and step.announce.when(spec):
                _announce(spec, step.announce, current)
    return dag


def labels_dag(spec: ModelSpec) -> DAG:
    return _build(spec, "labels")


def train_dag(spec: ModelSpec) -> DAG:
    return _build(spec, "train")


def score_dag(spec: ModelSpec) -> DAG:
    return _build(spec, "score")


def build(spec: ModelSpec) -> dict[str, DAG]:
    """The model's DAGs, one per kind the pipeline declares (labels, train, score)."""
    return {dag.dag_id: dag for dag in (_build(spec, kind) for kind in pipeline.DAGS)}


def dags_for(dag_file: str) -> dict[str, DAG]:
    """The DAGs of the spec named like the DAG file: ``dags/<model>.py`` → ``dags/specs/<model>.yaml``.

    One DAG file per spec keeps a broken spec an import error of its own file: the other
    models' DAGs still load.
    """
    path = Path(dag_file)
    return build(load_spec(path.parent / SPECS_DIR / f"{path.stem}.yaml"))
