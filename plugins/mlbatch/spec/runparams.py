"""Run params, named once: their names, defaults, types and the dry-run rule.

The DAGs' trigger form (``mlbatch.airflow.dag_factory`` builds Airflow ``Param`` objects from
:data:`PARAMS`), ``mlbatch run --param NAME=VALUE`` (:func:`parse`) and the stages
(:meth:`RunParam.get`) all read them from here.

Kept free of heavy imports: the DAG factory reads it at parse time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class RunParam:
    """One run param: how the trigger form shows it, how the CLI reads it, which DAGs take it."""

    name: str
    type: Literal["boolean", "string"]
    default: bool | str | None
    title: str
    description: str  # may name the writers a dry run skips as {writers}
    dags: tuple[str, ...]  # the DAG kinds (labels, train, score) whose trigger form offers it
    example: str  # for the CLI's help: NAME=EXAMPLE
    pattern: str | None = None  # a string's allowed form (JSON-schema regex)

    def get(self, params: Mapping[str, Any]) -> Any:
        """The run's value (its default when the run did not set it)."""
        value = params.get(self.name)
        return self.default if value is None else value

    def parse(self, value: str) -> bool | str:
        """A CLI value; ValueError saying what this param takes."""
        if self.type == "boolean":
            if value.lower() not in TRUE + FALSE:
                raise ValueError(f"{self.name} takes true or false")
            return value.lower() in TRUE
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"{self.name} must match {self.pattern}")
        return value


DRY_RUN = RunParam(
    name="dry_run",
    type="boolean",
    default=False,
    title="Dry run",
    description="Run the reads and every gate before a writer, write nothing: {writers} are skipped.",
    dags=("labels", "train", "score"),
    example="true",
)
MODEL_VERSION = RunParam(
    name="model_version",
    type="string",
    default=None,
    title="Model version",
    description="Score with this registered version (e.g. 20261101-1a2b3c4d) instead of the production "
    "model; checked against the registry when the run starts. Empty: production at the start of each run "
    "(a backfill of N days uses the current production model for every day).",
    dags=("score",),
    example="V",
    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
)
FORCE_RETRAIN = RunParam(
    name="force_retrain",
    type="boolean",
    default=False,
    title="Force retrain",
    description="Train and register a fresh version even when labels, query, parameters and code are "
    "unchanged (the run id joins the version hash). It is promoted only if it passes the model gate.",
    dags=("train",),
    example="true",
)
PARAMS = (DRY_RUN, MODEL_VERSION, FORCE_RETRAIN)
BY_NAME = {p.name: p for p in PARAMS}


def skipped(params: Mapping[str, Any], writes: bool) -> bool:
    """The dry-run rule: in a dry run, a step that writes what users see is skipped.

    ``writes``: the step writes (:attr:`mlbatch.airflow.pipeline.Step.writes`), or, in ``mlbatch run``,
    comes after a writer of its DAG (in Airflow the default trigger rule skips those on its own).
    """
    return writes and bool(DRY_RUN.get(params))


def cli_help() -> str:
    """``dry_run=true, model_version=V, force_retrain=true``."""
    return ", ".join(f"{p.name}={p.example}" for p in PARAMS)


def parse(items: list[str]) -> dict[str, Any]:
    """``["dry_run=true", "model_version=20261122-ab12cd34"]`` → a params dict.

    Raises ValueError naming the item when it is not ``name=value``, the name is unknown, or the
    value is not one the param takes.
    """
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in BY_NAME:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE with NAME one of {', '.join(BY_NAME)}")
        try:
            params[name] = BY_NAME[name].parse(value)
        except ValueError as exc:
            raise ValueError(f"--param {item!r}: {exc}") from None
    return params
