"""The spec's models: one pydantic class per section of a model's YAML, validated on load.

A bad spec fails loudly and early: at DAG import (an import error for that model's DAG file
only) and in the CLI (exit 2). :class:`SpecError` names the file, the field and what is wrong;
that includes the feature SQL files, which must exist and render for a sample day.
This module imports nothing heavy: it runs on every DAG parse.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

# The metric and family names are the jobs' (jobs/contract.py): a spec names only what they train.
from jobs.contract import BINARY_METRICS, MULTICLASS_METRICS, FamilyName
from mlbatch import names
from mlbatch.errors import UsageError
from mlbatch.spec.base import Strict
from mlbatch.spec.label_text import class_index, fold
from mlbatch.spec.retrain import Retrain

# MySQL identifiers are at most 64 characters; `<name>_predictions` must fit.
MODEL_NAME = r"^[a-z][a-z0-9_]{0,51}$"
COLUMN_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_SCHEDULE_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")

Identifier = Annotated[str, Field(pattern=COLUMN_NAME)]


class SpecError(UsageError, ValueError):
    """A spec file is invalid. ``str()`` names the file, each bad field and why."""

    def __init__(self, path: str | Path, problems: list[tuple[str, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{field}: {msg}" if field else msg for field, msg in problems]
        super().__init__(f"invalid model spec {self.path}:\n  " + "\n  ".join(lines))


def _check_schedule(value: str | None) -> str | None:
    if value is None or value in _SCHEDULE_PRESETS:
        return value
    fields = value.split()
    if len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields):
        return value
    raise ValueError(f"{value!r} is neither a preset ({', '.join(sorted(_SCHEDULE_PRESETS))}) nor a 5-field cron")


class Entity(Strict):
    key: Identifier = Field(description="Entity key column, in the warehouse and in predictions.")
    type: Literal["integer", "string"] = Field("integer", description="Type of the key values.")


class SheetSource(Strict):
    sheet: str = Field(min_length=10, description="Google spreadsheet key (from its URL).")
    worksheet: str = Field("labels", min_length=1, description="Worksheet (tab) title.")
    conn_id: str = Field("google_cloud_default", description="Airflow connection holding the service account JSON.")


class FileSource(Strict):
    file: str = Field(
        min_length=1,
        description="CSV export of the sheet; a relative path is under MLBATCH_HOME (the demo writes it).",
    )


class LabelColumns(Strict):
    key: str = Field(min_length=1, description="Sheet header of the key column.")
    label: str = Field(min_length=1, description="Sheet header of the label column.")


class Labels(Strict):
    source: SheetSource | FileSource = Field(description="Where analysts keep the labels.")
    columns: LabelColumns = Field(description="Which sheet columns hold the key and the label.")
    classes: list[str] = Field(min_length=2, description="Allowed labels; matched case-insensitively.")
    max_invalid_fraction: float = Field(
        0.02, ge=0, le=1, description="Above this share of rejected rows the sync is blocked and writes nothing."
    )
    max_delete_fraction: float = Field(
        0.2, ge=0, le=1, description="A sync deleting more than this share of current labels is blocked."
    )
    min_rows: int = Field(100, ge=1, description="Fewest accepted labels the labels gate lets through.")
    write_back: str | None = Field(None, description="Sheet column that receives each row's verdict.")
    schedule: str | None = Field("@hourly", description="How often the sheet is synced.")
    timeout_minutes: float = Field(
        30, gt=0, description="Longest any task of the labels DAG may run; then it is stopped (and retried)."
    )

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _check_schedule(v)))

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v: list[str]) -> list[str]:
        # The label checker's own rule (NFKC, invisible characters, case): a class accepted
        # here is exactly a sheet label the checker can tell apart from the others.
        return list(class_index(v).values())

    @model_validator(mode="after")
    def _write_back_is_its_own_column(self) -> Labels:
        # Verdicts overwrite that column's cells: pointed at the key or label column they
        # would destroy the analyst's data.
        if self.write_back is not None:
            taken = {fold(self.columns.key), fold(self.columns.label)}  # as the checker finds columns
            if fold(self.write_back) in taken:
                raise ValueError(
                    f"write_back {self.write_back!r} must not be the key or label column: "
                    "verdicts overwrite every cell of that column"
                )
        return self


class FeatureChecks(Strict):
    min_rows: int = Field(1000, ge=1, description="Fewest rows an unload may return.")
    max_null_fraction: float = Field(0.05, ge=0, le=1, description="Highest null share allowed in any column.")
    psi_warn: float = Field(
        0.1, ge=0, description="Population stability index (scoring day vs training) above which a feature is logged."
    )
    psi_fail: float = Field(
        0.25, gt=0, description="PSI above which a feature blocks scoring (the message names it and its PSI)."
    )

    @model_validator(mode="after")
    def _warn_below_fail(self) -> FeatureChecks:
        if self.psi_warn > self.psi_fail:
            raise ValueError(
                f"psi_warn ({self.psi_warn}) must not exceed psi_fail ({self.psi_fail}): a warning comes before a block"
            )
        return self


class Features(Strict):
    training_sql: str = Field(
        description="Redshift SQL (Jinja) for training rows, relative to the project root "
        "(MLBATCH_PROJECT_DIR, default: the repo root). Must exist and render when the spec loads."
    )
    scoring_sql: str = Field(
        description="Redshift SQL (Jinja) for the day's scoring rows. Must exist and render when the spec loads."
    )
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Values passed to the SQL templates (rendered as SQL literals)."
    )
    checks: FeatureChecks = Field(default_factory=FeatureChecks, description="The features gate's thresholds.")


class Gate(Strict):
    metric: str = Field("roc_auc", description="Held-out metric that decides promotion.")
    min: float = Field(description="Lowest acceptable value (highest, for log_loss).")
    max_regression: float = Field(
        0.01, ge=0, description="How much worse than the production model a candidate may be."
    )


class Resources(Strict):
    gpu: int = Field(0, ge=0, le=8, description="GPUs per job; also its slots in the mlbatch_gpu pool.")
    vcpu: float = Field(2, gt=0, description="vCPUs per job: ECS task size, Docker quota, its thread pools.")
    memory_gib: float = Field(4, gt=0, description="Memory per job in GiB (ECS task size).")


class Approval(Strict):
    """A person's approval between the model gate and production (off by default)."""

    required: bool = Field(
        False,
        description="A candidate that passed the model gate waits for a person (Airflow's Required actions, "
        "or `mlbatch models approve|reject`) before it replaces production.",
    )
    timeout_hours: float = Field(
        72, gt=0, description="No answer within this long: the candidate is rejected and the champion stays."
    )


class ScoreResources(Resources):
    """A scoring job's size: CPU by default (inference of the shipped families is fast on CPU)."""

    gpu: int = Field(0, ge=0, le=8, description="GPUs per scoring job; above 0 it takes slots of mlbatch_gpu.")
    vcpu: float = Field(4, gt=0, description="vCPUs per scoring job: ECS task size, Docker quota, its thread pools.")
    memory_gib: float = Field(8, gt=0, description="Memory per scoring job in GiB (ECS task size).")


class Train(Strict):
    schedule: str | None = Field("@monthly", description="Retraining schedule (train.retrain adds runs).")
    family: FamilyName = Field(description="Model family in jobs/families (jobs.contract.FAMILIES).")
    params: dict[str, Any] = Field(default_factory=dict, description="Family hyper-parameters.")
    gate: Gate = Field(description="When a trained version may replace production.")
    resources: Resources = Field(default_factory=Resources, description="What the training job asks for.")
    approval: Approval = Field(default_factory=Approval, description="Whether a person approves each promotion.")
    retrain: Retrain = Field(
        default_factory=Retrain,
        description="When label changes or drift start training (besides the schedule): decided by the labels DAG.",
    )
    timeout_minutes: float = Field(
        360,
        gt=0,
        description="Longest any task of the train DAG may run (the training job included); then the task is "
        "stopped, its job too, and retried.",
    )

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _check_schedule(v)))


class Score(Strict):
    schedule: str | None = Field("@daily", description="Scoring schedule.")
    shards: int = Field(1, ge=1, le=256, description="Scoring jobs per run, one per manifest shard.")
    timeout_minutes: float = Field(
        120,
        gt=0,
        description="Longest any task of the score DAG may run (each shard's job included); then the task is "
        "stopped, its job too, and retried.",
    )
    resources: ScoreResources = Field(
        default_factory=ScoreResources, description="What each scoring job (one per shard) asks for."
    )

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _check_schedule(v)))


class Publish(Strict):
    """Prediction-gate thresholds: today's predictions against the last published day's."""

    max_psi: float = Field(
        0.25,
        ge=0,
        description="Highest population stability index of today's scores (10 fixed bins over [0, 1]) "
        "against the last published day; above it the day is not published (0.1-0.25 is a moderate shift).",
    )
    max_class_share_shift: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Largest change of any class's share of the predictions against the last published day.",
    )
    history_days: int = Field(
        35,
        ge=1,
        le=8000,  # MySQL allows 8192 partitions per table: one per day kept
        description="Days of predictions kept in <model>_history (an entity's predictions by day), counting "
        "back from the newest published day; older days are dropped by the publish.",
    )
    sessions: int = Field(
        2,
        ge=1,
        le=64,
        description="Parallel app-DB sessions that load the day, one key range each (integer keys; string keys "
        "load, and commit, in one). The server parses each LOAD DATA on one core: up to half the writer's vCPUs.",
    )
    mode: Literal["upsert", "partitioned"] = Field(
        "upsert",
        description="upsert: the day is loaded into <model>_history, then upserted into <model>_predictions (one row "
        "per entity), so each row is written twice; readers look an entity up in <model>_predictions, which never "
        "sees DDL. partitioned (Aurora MySQL and MariaDB only): the day is loaded once and exchanged in as its "
        "partition of <model>_history; readers take an entity's newest row from <model>_history and <model>_base "
        "(the last prediction of entities no kept day scored), with the query `mlbatch sql` prints. At 1M rows the "
        "publish took 2.8 s against 8.0 s, but a lookup probes one index per kept day (p99 1.6 ms against 0.2 ms "
        "during a publish, 8 days kept), and the exchange waits for readers' open transactions while new lookups "
        "queue behind it (up to 2 s each): benchmarks/README.md, publish modes. Switching upsert to partitioned "
        "seeds <model>_base from <model>_predictions; switching back is refused.",
    )
    commit: Literal["day", "key_range"] = Field(
        "day",
        description="day: the whole day becomes visible in one transaction (readers never see half a day). "
        "key_range: each session upserts and commits its own key range in parallel, for days of hundreds of "
        "millions of rows that one transaction cannot upsert in time; readers see the day range by range, a "
        "failed or killed publish leaves some ranges applied without the day's log row, and the rerun completes it.",
    )


class Monitoring(Strict):
    """Realized performance: published predictions measured against labels that arrive later."""

    lookback_days: int = Field(
        30,
        ge=1,
        le=366,
        description="Published days measured after each label sync: the last N days up to the sync's day.",
    )
    min_rows: int = Field(
        200,
        ge=1,
        description="Fewest labelled predictions of a day before its realized metric can raise an alert "
        "(fewer: recorded, never alerted on; a handful of labels says little).",
    )
    alert: bool = Field(
        True,
        description="When a day's realized metric is worse than train.gate.min on at least min_rows rows, POST "
        "an alert to the failure webhook and mark the version `degraded` in the registry.",
    )
    retrain_on_degradation: bool = Field(
        False,
        description="A degraded version also emits the `mlbatch.<model>.retrain` asset event, which starts the "
        "train DAG.",
    )


class ModelSpec(Strict):
    name: str = Field(pattern=MODEL_NAME, description="Model id: DAG ids, table names, object prefixes.")
    owner: str = Field(min_length=1, description="Team or person answering for the model.")
    description: str = Field("", description="Shown in the DAGs' docs.")
    entity: Entity = Field(description="The thing each prediction is about.")
    labels: Labels = Field(description="The analysts' label sheet and its checks.")
    features: Features = Field(description="Warehouse queries for training and scoring rows.")
    train: Train = Field(description="Model family, schedule, resources and promotion gate.")
    score: Score = Field(default_factory=Score, description="Daily scoring: schedule and shards.")
    publish: Publish = Field(
        default_factory=Publish, description="The prediction gate's drift thresholds and the history kept."
    )
    monitoring: Monitoring = Field(
        default_factory=Monitoring, description="Realized performance of published days from late labels."
    )

    # Where the spec was loaded from; relative SQL paths resolve against `root`.
    path: Path | None = Field(None, exclude=True)
    root: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelSpec:
        allowed = BINARY_METRICS if self.is_binary else MULTICLASS_METRICS
        if self.train.gate.metric not in allowed:
            kind = "binary" if self.is_binary else "multiclass"
            raise ValueError(
                f"train.gate.metric {self.train.gate.metric!r} does not fit a {kind} model "
                f"({len(self.labels.classes)} classes); use one of {', '.join(allowed)}"
            )
        return self

    @property
    def is_binary(self) -> bool:
        return len(self.labels.classes) == 2

    @property
    def predictions_table(self) -> str:
        return names.predictions_table(self.name)

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else (self.root or project_dir()) / p


# The folder that holds dags/, plugins/ and sql/ in this checkout (/opt/airflow in the Airflow image).
REPO_ROOT = Path(__file__).resolve().parents[3]


def project_dir() -> Path:
    """Where a spec's relative paths (``features.training_sql``, ...) start: ``MLBATCH_PROJECT_DIR``,
    else the folder that holds dags/ and plugins/ (the repo root).

    Set explicitly, not guessed from the spec's location: a deployment (the Airflow image, MWAA's
    dags/ and plugins.zip, a git-sync volume) need not keep sql/ next to the specs.
    """
    return Path(os.environ.get("MLBATCH_PROJECT_DIR") or REPO_ROOT).resolve()
