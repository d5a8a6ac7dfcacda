"""The ``mlbatch`` command: run and debug a model's stages without Airflow (more commands in commands/).

Exit codes: 0 ok; 1 a gate blocked (the message names the check and the numbers);
2 usage or spec error; 3 a stage failed for another reason (a job crashed, a server is down).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from mlbatch import pipeline, runparams
from mlbatch.env import Environment
from mlbatch.spec import ModelSpec, SpecError, find_spec

app = typer.Typer(
    help="Scheduled batch ML on Airflow 3: labels, features, train, score, publish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)  # never wrap: paths and values must stay copyable
err = Console(stderr=True, soft_wrap=True)

EXIT_GATE, EXIT_USAGE, EXIT_FAILED = 1, 2, 3


def load_spec_or_exit(name_or_path: str, env: Environment) -> ModelSpec:
    try:
        return find_spec(name_or_path, env.specs_dir)
    except SpecError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
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
    from mlbatch.gates import GateFailed
    from mlbatch.stages import steps
    from mlbatch.stages.context import RunContext

    _logging(verbose)
    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    chosen = stage or list(pipeline.STAGES)
    unknown = [s for s in chosen if s not in pipeline.STAGES]
    if unknown:
        err.print(f"error: unknown stage {', '.join(unknown)}; choose from {', '.join(pipeline.STAGES)}")
        raise typer.Exit(EXIT_USAGE)
    try:
        params = runparams.parse(param or [])
        ctx = RunContext(env=env, spec=model, ds=ds, run_id=run_id or f"cli__{ds}", params=params)
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    ctx = _publishing(ctx, chosen, run_id is not None)
    for name, thunk, skipped in steps(ctx, chosen):
        if skipped:
            out.print(f"[yellow]skip[/yellow] {model.name} {ctx.ds} {name}: dry run", highlight=False)
            continue
        try:
            result = thunk()
        except GateFailed as exc:
            err.print(f"[red]{name}: {exc}[/red]", highlight=False)
            raise typer.Exit(EXIT_GATE) from None
        except Exception as exc:  # noqa: BLE001 - the CLI reports any stage failure the same way
            err.print(f"[red]{name} failed:[/red] {type(exc).__name__}: {exc}", highlight=False)
            if verbose:
                err.print_exception()
            raise typer.Exit(EXIT_FAILED) from None
        out.print(f"[green]ok[/green] {model.name} {ctx.ds} {name}: {_short(result)}", highlight=False)


def _publishing(ctx: Any, chosen: list[str], named: bool) -> Any:
    """Publish/export without score in this run: the day's predictions of the run that scored it."""
    from mlbatch.runs import NoScoredRun, publishing_context

    if named:  # --run-id names the run to publish from
        return ctx
    try:
        found, run_id = publishing_context(ctx, chosen)
    except NoScoredRun as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    if run_id is not None:
        out.print(f"{ctx.model} {ctx.ds}: publishing the predictions of run {run_id}", highlight=False)
    return found


def _short(result: Any) -> str:
    if isinstance(result, dict):
        return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, list | dict))
    return str(result)


def realized_cell(r: dict[str, Any] | None) -> str:
    """The realized cell of ``mlbatch status`` (kept here for devtools/demo.py, which prints it)."""
    from mlbatch.status_view import realized_cell as cell

    return cell(r)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Labels, production model, predictions, export, realized metric, retraining decision and cost of every model."""
    from mlbatch.status import collect

    env = Environment.from_env()
    try:
        report = collect(env)
    except SpecError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    from mlbatch.status_view import render

    # Wrapped, unlike `out`: the blocks fit the terminal instead of running past its edge.
    Console().print(render(report))


@app.command()
def sql(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    ds: Annotated[str, typer.Option(help="The day, YYYY-MM-DD.")],
) -> None:
    """Print the Redshift and Aurora statements production would run for the day (runs nothing)."""
    from mlbatch.statements import production_statements

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    try:
        for title, text in production_statements(model, ds):
            print(f"-- {title}\n{text.rstrip()};\n")
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None


def _register_command_modules() -> None:
    import importlib
    import pkgutil

    from mlbatch import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"mlbatch.commands.{info.name}").register(app)


_register_command_modules()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
