"""The contract between the orchestrator (mlbatch) and the jobs: names and the train job's config.

One place for what both sides must agree on: the metric names the train job writes into
``metrics.json`` (and the spec's ``train.gate.metric`` may name), the model family names (the
spec's ``train.family``; :data:`jobs.families.FAMILIES` maps each to its class), and the train
job's config (``job_config.json``), which the train stage builds with :meth:`TrainConfig.to_dict`
and the train job parses with :meth:`TrainConfig.parse`.

Standard library only: the job images carry no pydantic, and mlbatch imports this module when it
parses a spec (on every DAG parse). jobs/ never imports mlbatch; mlbatch imports this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

BINARY_METRICS = ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss")
MULTICLASS_METRICS = ("accuracy", "macro_f1", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
FamilyName = Literal["xgboost", "torch_mlp", "torch_text"]  # the spec's train.family (a type for it)
FAMILIES: tuple[str, ...] = get_args(FamilyName)
DEFAULT_MIN_ROWS = 50


class ConfigError(ValueError):
    """A train config that breaks the contract; ``str()`` names the field and what is wrong."""


def metrics_for(classes: int) -> tuple[str, ...]:
    """The metrics the train job computes for a model with this many classes."""
    return BINARY_METRICS if classes == 2 else MULTICLASS_METRICS


def default_metric(classes: int) -> str:
    return "roc_auc" if classes == 2 else "macro_f1"


@dataclass(frozen=True)
class Split:
    """Shares of the labelled rows held out for early stopping (valid) and for the metrics (test)."""

    valid: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        for name in ("valid", "test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise ConfigError(f"split.{name} must be a number in (0, 1), got {value!r}")
        if self.valid + self.test >= 1:
            raise ConfigError(f"split.valid + split.test must be below 1 (rows are left to train on), got {self}")


@dataclass(frozen=True)
class TrainConfig:
    """What ``python -m jobs.train --config`` reads: one model version's training."""

    model: str
    version: str
    entity_key: str
    classes: list[str]
    family: str
    metric: str = ""  # "" = the task's default (roc_auc for binary, macro_f1 for multiclass)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    min_rows: int = DEFAULT_MIN_ROWS
    split: Split = field(default_factory=Split)
    lineage: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "version", "entity_key"):
            _require(isinstance(getattr(self, name), str) and getattr(self, name), name, "a non-empty string", self)
        _check_classes(self.classes)
        _require(self.family in FAMILIES, "family", f"one of {list(FAMILIES)}", self)
        if not self.metric:
            object.__setattr__(self, "metric", default_metric(len(self.classes)))
        allowed = metrics_for(len(self.classes))
        task = "binary" if self.binary else "multiclass"
        _require(self.metric in allowed, "metric", f"one of {list(allowed)} (computed for {task} models)", self)
        _require(isinstance(self.params, dict), "params", "a mapping of the family's parameters", self)
        _require(isinstance(self.lineage, dict), "lineage", "a mapping", self)
        for name in ("seed", "min_rows"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0, name, "an integer >= 0", self
            )

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @classmethod
    def parse(cls, raw: Any) -> TrainConfig:
        """A config from its JSON form; :class:`ConfigError` names a missing, unknown or bad field."""
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a JSON object, got {type(raw).__name__}")
        names = {f for f in cls.__dataclass_fields__}
        missing = [f for f in ("model", "version", "entity_key", "classes", "family") if f not in raw]
        if missing:
            raise ConfigError(f"missing keys {missing}")
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(
                f"unknown keys {unknown} (a typo would silently fall back to a default); known: {sorted(names)}"
            )
        split = raw.get("split", {})
        if not isinstance(split, dict) or set(split) - {"valid", "test"}:
            raise ConfigError(f"split must be a mapping of valid and/or test, got {split!r}")
        return cls(**{**raw, "split": Split(**split)})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``job_config.json``), which :meth:`parse` reads back to an equal config."""
        return asdict(self)


def _require(ok: Any, name: str, what: str, config: TrainConfig) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {what}, got {getattr(config, name)!r}")


def _check_classes(classes: Any) -> None:
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)):
        raise ConfigError(f"classes must be a list of at least 2 non-empty strings, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes are not distinct: {classes}")


@dataclass(frozen=True)
class ModelMeta:
    """What the score job needs from ``model_meta.json`` (the train job writes it next to the model).

    ``raw`` keeps the whole file: the family's own keys (file names, preprocessing) go to its
    ``load``.
    """

    family: str
    entity_key: str
    classes: list[str]
    entity_key_type: str = "string"  # the key's Arrow type at training; used when a shard has no files
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, raw: Any) -> ModelMeta:
        """:class:`ConfigError` names a missing or bad field."""
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a JSON object, got {type(raw).__name__}")
        missing = [f for f in ("family", "entity_key", "classes") if f not in raw]
        if missing:
            raise ConfigError(f"missing keys {missing}")
        if raw["family"] not in FAMILIES:
            raise ConfigError(f"family must be one of {list(FAMILIES)}, got {raw['family']!r}")
        if not isinstance(raw["entity_key"], str) or not raw["entity_key"]:
            raise ConfigError(f"entity_key must be a non-empty string, got {raw['entity_key']!r}")
        _check_classes(raw["classes"])
        key_type = raw.get("entity_key_type", "string")
        return cls(raw["family"], raw["entity_key"], list(raw["classes"]), str(key_type), raw)
