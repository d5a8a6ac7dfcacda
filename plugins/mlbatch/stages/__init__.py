"""Stage functions: the work of every task, callable from Airflow and from the CLI alike.

Which step runs which function, in which order, is declared once in :mod:`mlbatch.pipeline`;
:func:`steps` is how ``mlbatch run`` walks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from mlbatch import pipeline, runparams
from mlbatch.stages.context import RunContext


class RunStep(NamedTuple):
    name: str
    run: Callable[[], Any]
    skipped: bool  # by the run's dry_run param


def _thunk(ctx: RunContext, step: pipeline.Step, args: tuple[Any, ...]) -> Callable[[], Any]:
    target = pipeline.resolve(step.call or "")
    if step.kind == "external":
        return lambda: target(ctx, *args).run()  # start, wait here, finish
    return lambda: target(ctx, *args)


def steps(ctx: RunContext, stages: list[str]) -> Iterator[RunStep]:
    """The chosen stages' steps, in pipeline order, each with whether the dry-run rule skips it."""
    for s in pipeline.cli_steps(stages, ctx.spec.score.shards):
        yield RunStep(s.name, _thunk(ctx, s.step, s.args), runparams.skipped(ctx.params, s.after_writer))
