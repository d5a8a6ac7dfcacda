"""The pipeline's steps for the CLI: :func:`steps` walks :mod:`mlbatch.airflow.pipeline` as the DAGs
do: each step's function, then its report where the step declares one (as ``StageOperator`` writes
it), and the dry-run rule. ``mlbatch run`` and ``mlbatch labels sync`` run what it yields."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from mlbatch.airflow import pipeline
from mlbatch.spec import runparams
from mlbatch.stages.context import RunContext


class RunStep(NamedTuple):
    name: str
    run: Callable[[], Any]
    skipped: bool  # by the run's dry_run param


def _thunk(ctx: RunContext, step: pipeline.Step, args: tuple[Any, ...]) -> Callable[[], Any]:
    target = pipeline.resolve(step.call or "")
    write_report = pipeline.resolve_report(step.name, step.report) if step.report else None

    def call() -> Any:
        result = target(ctx, *args).run() if step.kind == "external" else target(ctx, *args)  # start, wait, finish
        if write_report is not None:
            write_report(ctx)
        return result

    return call


def steps(ctx: RunContext, stages: list[str]) -> Iterator[RunStep]:
    """The chosen stages' steps, in pipeline order, each with whether the dry-run rule skips it."""
    for s in pipeline.cli_steps(stages, ctx.spec.score.shards):
        yield RunStep(s.name, _thunk(ctx, s.step, s.args), runparams.skipped(ctx.params, s.after_writer))
