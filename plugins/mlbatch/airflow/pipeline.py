"""The pipeline, declared once: every step of the three DAGs of a model, in order.

:mod:`mlbatch.airflow.dag_factory` turns each :class:`Step` of :data:`DAGS` into an Airflow task;
``mlbatch run`` (:func:`mlbatch.cli.steps.steps`) calls the same steps in-process.

``call`` names the callable (``"module:attribute"`` of :mod:`mlbatch.stages`) instead of
importing it: DAG files must parse cheaply and the stage modules import pandas and pyarrow. The
name is checked when the step is declared, against the stage module's source (read, not
imported: under a millisecond), so a typo is an import error of every DAG file, naming the step.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlbatch.airflow.pools import APPDB_POOL, HEAVY_POOL, WAREHOUSE_POOL
from mlbatch.airflow.step_docs import approval_doc, model_gate_doc, realized_doc, retrain_doc
from mlbatch.errors import UsageError

if TYPE_CHECKING:
    from mlbatch.spec import ModelSpec
    from mlbatch.stages.context import RunContext

#: A step's argument after the RunContext: a declared word ("train", "score"), or a shard's number.
StageArg = str | int

STAGES_DIR = Path(__file__).parents[1] / "stages"

# stage: a function returning its summary; gate: the same, never retried (a failed check is a verdict);
# external: an ExternalWork class (job, warehouse statement) stopped with its task; approval: a person's.
Kind = Literal["stage", "external", "gate", "approval"]
DagKind = Literal["labels", "train", "score"]


class PipelineError(UsageError, ValueError):
    """A step of the declaration is wrong (names the step)."""


def _always(spec: ModelSpec) -> bool:
    return True


def _approval(spec: ModelSpec) -> bool:
    return spec.train.approval.required


def _no_approval(spec: ModelSpec) -> bool:
    return not spec.train.approval.required


def _retrains(spec: ModelSpec) -> bool:
    """Labels or drift may start training (``train.retrain``)."""
    return spec.train.retrain.on_labels is not False or spec.train.retrain.on_drift is not None


def _retrain_on_degradation(spec: ModelSpec) -> bool:
    return spec.monitoring.retrain_on_degradation


@cache
def _defined(module: str) -> frozenset[str]:
    """Top-level functions and classes of ``mlbatch/stages/<module>.py``, from its source."""
    path = STAGES_DIR / f"{module}.py"
    if not path.is_file():
        return frozenset()
    return frozenset(re.findall(r"^(?:def|class)\s+(\w+)", path.read_text(encoding="utf-8"), re.MULTILINE))


#: The run reports a step may name (``Step.report``): functions of :mod:`mlbatch.reporting.reports` that take
#: the RunContext and return the URI they wrote. Named, not imported, as ``call`` is (the reports
#: import jinja2 and pyarrow); tests/unit/test_pipeline.py imports each for real.
REPORTS: frozenset[str] = frozenset({"training_report", "scoring_summary", "realized_reports"})


def check_report(step: str, report: str) -> None:
    """Raise :class:`PipelineError`, naming the step, unless ``report`` is one of :data:`REPORTS`."""
    if report not in REPORTS:
        raise PipelineError(
            f"step {step!r}: report {report!r} is no run report of mlbatch.reporting.reports: "
            f"one of {', '.join(sorted(REPORTS))}"
        )


def resolve_report(step: str, report: str) -> Callable[[RunContext], str | None]:
    """The function of :mod:`mlbatch.reporting.reports` a step's ``report`` names (imports it: at run time only)."""
    check_report(step, report)
    write: Callable[[RunContext], str | None] = getattr(importlib.import_module("mlbatch.reporting.reports"), report)
    return write


@dataclass(frozen=True)
class Announce:
    """An asset event emitted after a step, from its XCom (Airflow only).

    ``check`` (with ``key``): a short-circuit task that skips the event unless the step's result
    has ``key`` true. ``extra``: result keys copied into the event's extra. ``doc`` may name the
    asset as ``{asset}``.
    """

    task_id: str
    asset: str
    doc: str
    check: str | None = None
    check_doc: str = ""
    key: str = ""
    extra: tuple[str, ...] = ()
    when: Callable[[ModelSpec], bool] = _always


@dataclass(frozen=True)
class Step:
    """One task of a DAG, and (with a ``stage``) one step of ``mlbatch run``."""

    name: str  # the task id; in the CLI qualified by its DAG when two DAGs share it
    kind: Kind
    doc: str | Callable[[ModelSpec], str]
    call: str | None = None  # "module:attribute" of mlbatch.stages; None for an approval
    stage: str | None = None  # the `mlbatch run --stage` group; None: not run by the CLI
    args: tuple[str, ...] = ()  # after the RunContext
    writes: bool = False  # writes what users see: skipped in a dry run
    per_shard: bool = False  # fan-out: one task (CLI step) per score shard, the shard last in args
    job: Literal["train", "score"] | None = None  # the spec section whose resources size the job
    report: str | None = None  # one of REPORTS (mlbatch.reporting.reports), written after a stage or gate step
    outlets: tuple[str, ...] = ()  # the model's assets updated when the step succeeds
    outlets_when: Callable[[ModelSpec], bool] = _always
    one_at_a_time: bool = False  # across all runs of the model (max_active_tis_per_dag=1)
    trigger_rule: str = "all_success"  # a failed or skipped step stops what follows
    when: Callable[[ModelSpec], bool] = _always  # in the DAG only when this holds for the spec
    announce: Announce | None = None
    pool: str | None = None  # the shared pool it takes a slot of (mlbatch.airflow.pools); GPU jobs: by resources
    # The steps it waits for, by name; () waits for the step declared just before it. A step that
    # needs only an earlier step's output names it and runs beside the steps in between.
    after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.call is None) != (self.kind == "approval"):
            raise PipelineError(f"step {self.name!r}: an approval has no call, every other kind needs one")
        if self.call is not None:
            module, sep, attribute = self.call.partition(":")
            if not sep or attribute not in _defined(module):
                raise PipelineError(
                    f"step {self.name!r}: call {self.call!r} names nothing: "
                    f"mlbatch/stages/{module}.py defines no function or class {attribute!r}"
                )
        if self.report is not None:
            self._check_report(self.report)

    def _check_report(self, report: str) -> None:
        check_report(self.name, report)
        # Only StageOperator writes reports: on any other step the report would silently never be written.
        if self.kind not in ("stage", "gate") or self.per_shard:
            what = f"a per-shard {self.kind}" if self.per_shard else f"an {self.kind}"
            raise PipelineError(
                f"step {self.name!r}: report {report!r} on {what} step: only a stage or gate step of one "
                "task writes a report"
            )

    def describe(self, spec: ModelSpec) -> str:
        return self.doc(spec) if callable(self.doc) else self.doc


@dataclass(frozen=True)
class Trigger:
    """An asset of the model whose events start a run of the DAG (besides its time schedule)."""

    asset: str
    when: Callable[[ModelSpec], bool] = _always


@dataclass(frozen=True)
class DagSteps:
    """The steps of one DAG of a model: each after the one before it, or after those it names
    (``Step.after``). ``mlbatch run`` runs them one by one in the order declared."""

    kind: DagKind
    what: str
    steps: tuple[Step, ...]
    triggers: tuple[Trigger, ...] = ()  # its inputs: the first is the one its doc names

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for step in self.steps:
            unknown = [name for name in step.after if name not in seen]
            if unknown:
                raise PipelineError(
                    f"{self.kind} DAG: step {step.name!r} waits for {unknown}, which no step declared before it is"
                )
            seen.add(step.name)

    def upstream(self, spec: ModelSpec) -> dict[str, tuple[str, ...]]:
        """Each of the spec's steps (those whose ``when`` holds) with the steps it waits for; a
        step the spec leaves out stands for the steps it waits for itself."""
        declared = {s.name: s.after or ((self.steps[i - 1].name,) if i else ()) for i, s in enumerate(self.steps)}
        present = {s.name for s in self.steps if s.when(spec)}

        def resolve(name: str) -> tuple[str, ...]:  # declared names only point back: it ends
            return (name,) if name in present else tuple(u for d in declared[name] for u in resolve(d))

        return {
            s.name: tuple(dict.fromkeys(u for d in declared[s.name] for u in resolve(d)))
            for s in self.steps
            if s.name in present
        }


def resolve(call: str) -> Any:
    """The function or class a step's ``call`` names (imports its stage module: at run time only)."""
    module, _, attribute = call.partition(":")
    return getattr(importlib.import_module(f"mlbatch.stages.{module}"), attribute)


LABELS = DagSteps(
    "labels",
    "sync the label sheet",
    (
        Step(
            "check_sheet",
            "stage",
            "Read the sheet once, check every row, write verdicts back, stage the accepted labels.",
            call="labels:check_sheet",
            stage="labels",
        ),
        Step(
            "labels_gate",
            "gate",
            "Block the sync when too many rows are invalid or too few labels remain.",
            call="labels:labels_gate",
            stage="labels",
        ),
        Step(
            "apply_labels",
            "stage",
            "Apply only the difference in one transaction; snapshot the labels when they changed.",
            call="labels:apply_labels",
            stage="labels",
            writes=True,
        ),
        Step(
            "decide_retrain",
            "stage",
            retrain_doc,
            call="retrain:decide_retrain",
            stage="labels",
            announce=Announce(
                "announce_labels",
                "labels",
                "Emit `{asset}` with the label sync to train on and the reason: it starts the train DAG.",
                check="retrain_needed",
                check_doc="Skip the asset event unless the retraining policy says train now (the reason is in "
                "decide_retrain's log and XCom).",
                key="retrain",
                extra=("sync_id", "reason"),
                when=_retrains,
            ),
        ),
        Step(
            "realized_performance",
            "stage",
            realized_doc,
            call="realized:realized_performance",
            report="realized_reports",
            pool=HEAVY_POOL,
            stage="labels",
            writes=True,
            announce=Announce(
                "request_retrain",
                "retrain",
                "Emit `{asset}`: the train DAG trains a fresh version (as `force_retrain`).",
                check="degraded",
                check_doc="Skip the retrain request when no day degraded.",
                key="retrain",
                extra=("sync_id", "degraded"),
                when=_retrain_on_degradation,
            ),
        ),
    ),
)

TRAIN = DagSteps(
    "train",
    "train, register and gate a model",
    (
        Step(
            "unload_training",
            "external",
            "UNLOAD the training query to parquet parts + manifest.",
            call="features:Unload",
            pool=WAREHOUSE_POOL,
            stage="unload",
            args=("train",),
        ),
        Step(
            "features_gate",
            "gate",
            "Rows, null fraction per column, key uniqueness.",
            call="features:features_gate",
            pool=HEAVY_POOL,
            stage="unload",
            args=("train",),
        ),
        Step(
            "train",
            "external",
            "Run the training job (container or local process) on the run's label snapshot (the one the "
            "triggering label change names); `force_retrain` makes a fresh version.",
            call="train:TrainJob",
            stage="train",
            writes=True,
            job="train",
        ),
        Step(
            "register",
            "stage",
            "Register the version with metrics and lineage.",
            call="train:register",
            stage="train",
            writes=True,
        ),
        Step(
            "model_gate",
            "gate",
            model_gate_doc,
            call="train:model_gate",
            stage="train",
            writes=True,
            report="training_report",
            outlets=("model",),
            outlets_when=_no_approval,  # with an approval, the event waits for the person
        ),
        Step(
            "approve_promotion",
            "approval",
            approval_doc,
            when=_approval,
            announce=Announce("announce_model", "model", "Emit `{asset}`: the approved version is live."),
        ),
    ),
    # A material label change or drift (announce_labels, train.retrain), and a retrain request when
    # production degraded on late labels.
    triggers=(Trigger("labels", when=_retrains), Trigger("retrain", when=_retrain_on_degradation)),
)

SCORE = DagSteps(
    "score",
    "score the day and publish",
    (
        Step(
            "resolve_model",
            "stage",
            "Fix the model version for the whole run: production, or the `model_version` param.",
            call="score:resolve_model",
            stage="score",
        ),
        Step(
            "unload_scoring",
            "external",
            "UNLOAD the day's scoring query to parquet parts + manifest.",
            call="features:Unload",
            pool=WAREHOUSE_POOL,
            stage="unload",
            args=("score",),
        ),
        Step(
            "features_gate",
            "gate",
            "Rows, nulls, key uniqueness, and the model's feature schema.",
            call="features:features_gate",
            pool=HEAVY_POOL,
            stage="score",
            args=("score",),
        ),
        Step(
            "score",
            "external",
            "One scoring job per shard of the manifest.",
            call="score:ScoreShard",
            stage="score",
            per_shard=True,
            job="score",
        ),
        Step(
            "predictions_gate",
            "gate",
            "Count equals the scoring input, no nulls, scores in range, one row per key.",
            call="score:predictions_gate",
            pool=HEAVY_POOL,
            stage="score",
        ),
        # One publish and one export of a model at a time, across all its runs (a backfill runs
        # up to its max_active_runs days at once): they take turns instead of queueing on the
        # app DB's lock or the warehouse. Order does not matter: an older day never replaces a
        # newer row, and the export replaces its own day only.
        Step(
            "publish",
            "stage",
            "Publish the day to the app DB atomically; never replace a newer day. One at a time per model.",
            call="publish:publish",
            pool=APPDB_POOL,
            stage="publish",
            writes=True,
            report="scoring_summary",
            one_at_a_time=True,
        ),
        # Beside the publish: the export reads the gated shards, not the app DB; the export gate
        # waits for both (it reconciles the warehouse with the publish log).
        Step(
            "export",
            "external",
            "Replace the day in the warehouse, beside the publish. One at a time per model.",
            call="publish:Export",
            pool=WAREHOUSE_POOL,
            stage="export",
            writes=True,
            one_at_a_time=True,
            after=("predictions_gate",),
        ),
        Step(
            "export_gate",
            "gate",
            "The warehouse's count for the day equals the published count.",
            call="publish:export_gate",
            stage="export",
            outlets=("predictions",),
            after=("publish", "export"),
        ),
    ),
)

#: The three DAGs of a model, in the order ``mlbatch run`` runs their steps.
DAGS: dict[str, DagSteps] = {d.kind: d for d in (LABELS, TRAIN, SCORE)}

#: The ``mlbatch run --stage`` groups, in the order their first step runs.
STAGES: tuple[str, ...] = tuple(dict.fromkeys(s.stage for d in DAGS.values() for s in d.steps if s.stage is not None))

#: Task ids of the steps that write what users see (skipped in a dry run).
WRITERS: frozenset[str] = frozenset(s.name for d in DAGS.values() for s in d.steps if s.writes)


@dataclass(frozen=True)
class CliStep:
    """A declared step as ``mlbatch run`` runs it."""

    name: str  # e.g. "features_gate[train]", "score[0]"
    step: Step
    args: tuple[StageArg, ...]  # after the RunContext (a shard's number last)
    after_writer: bool  # a writer, or after one in its DAG: skipped in a dry run (as Airflow would)


def cli_steps(stages: list[str] | tuple[str, ...], shards: int) -> Iterator[CliStep]:
    """The steps of the chosen ``--stage`` groups, in DAG order (labels, train, score)."""
    counts: dict[str, int] = {}
    for d in DAGS.values():
        for s in d.steps:
            counts[s.name] = counts.get(s.name, 0) + 1
    for d in DAGS.values():
        after_writer = False
        for s in d.steps:
            after_writer = after_writer or s.writes
            if s.stage is None or s.stage not in stages:
                continue
            name = f"{s.name}[{d.kind}]" if counts[s.name] > 1 else s.name
            for shard in range(shards) if s.per_shard else [None]:
                if shard is None:
                    yield CliStep(name, s, s.args, after_writer)
                else:
                    yield CliStep(f"{name}[{shard}]", s, (*s.args, shard), after_writer)
