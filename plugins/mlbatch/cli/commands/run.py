"""``mlbatch run``: a model's stages for one day, in pipeline order, with the code the DAG tasks run.

Each step as the DAG runs it (:mod:`mlbatch.cli.steps`), then ``ok``/``skip`` and its result on a line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from mlbatch.airflow import pipeline
from mlbatch.backends.env import Environment
from mlbatch.cli.common import configure_logging, load_spec_or_exit, out, run_step, usage_errors
from mlbatch.cli.steps import steps
from mlbatch.errors import UsageError
from mlbatch.reporting.runs import publishing_context
from mlbatch.spec import runparams
from mlbatch.stages.context import RunContext


def register(app: typer.Typer) -> None:
    app.command()(run)


def run(
    spec: Annotated[str, typer.Argument(help="Spec file or model name in dags/specs.")],
    ds: Annotated[str, typer.Option(help="The day to run, YYYY-MM-DD.")],
    stage: Annotated[list[str] | None, typer.Option(help=f"{', '.join(pipeline.STAGES)}; repeatable.")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default cli__DS); a new one redoes finished steps.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help=f"Run param NAME=VALUE: {runparams.cli_help()}; repeatable."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a model's stages for one day, in order, with the code the DAG tasks run."""

    configure_logging(verbose)
    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    chosen = stage or list(pipeline.STAGES)
    unknown = [s for s in chosen if s not in pipeline.STAGES]
    if unknown:
        raise UsageError(f"unknown stage {', '.join(unknown)}; choose from {', '.join(pipeline.STAGES)}")
    with usage_errors(ValueError):  # a --param the run does not take, a --ds that is no date
        params = runparams.parse(param or [])
        ctx = RunContext(env=env, spec=model, ds=ds, run_id=run_id or f"cli__{ds}", params=params)
    ctx = _publishing(ctx, chosen, run_id is not None)
    for name, thunk, skipped in steps(ctx, chosen):
        if skipped:
            out.print(Text.assemble(("skip", "yellow"), f" {model.name} {ctx.ds} {name}: dry run"))
            continue
        result = run_step(name, thunk)
        out.print(Text.assemble(("ok", "green"), f" {model.name} {ctx.ds} {name}: {_short(result)}"))


def _publishing(ctx: Any, chosen: list[str], named: bool) -> Any:
    """Publish/export without score in this run: the day's predictions of the run that scored it."""

    if named:  # --run-id names the run to publish from
        return ctx
    found, run_id = publishing_context(ctx, chosen)  # NoScoredRun: exit 2, saying what to run first
    if run_id is not None:
        out.print(f"{ctx.model} {ctx.ds}: publishing the predictions of run {run_id}", highlight=False)
    return found


def _short(result: Any) -> str:
    if isinstance(result, dict):
        return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, list | dict))
    return str(result)
