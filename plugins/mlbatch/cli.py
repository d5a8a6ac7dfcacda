"""The ``mlbatch`` command: run and debug a model's stages without Airflow (more commands in commands/).

Exit codes: 0 ok; 1 a gate blocked (the message names the check and the numbers);
2 usage or spec error; 3 a stage failed for another reason (a job crashed, a server is down).

A command never picks an exit code for an error: it raises, and :func:`reports_errors` (wrapped
around every registered command, those of commands/ too) prints the error on stderr and exits
with the code its type means (:mod:`mlbatch.errors`); an exception that is no mlbatch error
exits 3 with its type name, and its traceback with ``--verbose``.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from mlbatch import pipeline, runparams
from mlbatch.env import Environment
from mlbatch.errors import EXIT_FAILED, EXIT_GATE, MlbatchError, StepFailed, UsageError, exit_code_of
from mlbatch.errors import EXIT_USAGE as EXIT_USAGE  # re-exported: where commands took the codes from
from mlbatch.spec import ModelSpec, find_spec

app = typer.Typer(
    help="Scheduled batch ML on Airflow 3: labels, features, train, score, publish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Never wrap: paths and values must stay copyable. No markup and no emoji codes: what these
# print is data (error text, spec patterns such as ^[a-z][a-z0-9_]{0,51}$, sheet cells, a
# reason someone typed), which rich would read as style tags and drop, or turn :name: into an
# emoji. Colour comes from Text styles instead; tables printed here are safe for the same reason.
out = Console(soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)

P = ParamSpec("P")
R = TypeVar("R")


def error_text(exc: BaseException) -> Text:
    """What the CLI prints for ``exc``: its text verbatim (a Text, never markup), the label in red."""
    if isinstance(exc, StepFailed):
        if exc.exit_code == EXIT_GATE:  # the gate's message already says which gate blocked
            return Text(f"{exc.step}: {exc.cause}", style="red")
        return Text.assemble((f"{exc.step} failed:", "red"), f" {type(exc.cause).__name__}: {exc.cause}")
    if isinstance(exc, MlbatchError):  # its message was written for the person at the terminal
        return Text.assemble(("error:", "red"), f" {exc}")
    return Text.assemble(("error:", "red"), f" {type(exc).__name__}: {exc}")  # the type says more than the text


def report(exc: BaseException, *, verbose: bool = False) -> int:
    """Print ``exc`` on stderr and return the exit code its type means.

    With ``verbose`` an exit-3 error also gets its traceback: that is the one that may be a bug
    (a gate's numbers or an input error's text say all there is to say).
    """
    code = exit_code_of(exc)
    err.print(error_text(exc))
    if verbose and code == EXIT_FAILED:
        from rich.traceback import Traceback

        shown = exc.cause if isinstance(exc, StepFailed) else exc
        err.print(Traceback.from_exception(type(shown), shown, shown.__traceback__))
    return code


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """``command``, with any error it raises reported by :func:`report` and exited with its code.

    A ``verbose`` option of the command, where it has one, asks for the traceback.
    """

    @functools.wraps(command)  # typer reads the signature and the annotations through this
    def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # an exit code the command chose, Ctrl-C, a usage error typer prints itself (exit 2)
        except Exception as exc:  # noqa: BLE001 - every other error leaves through the one report
            raise typer.Exit(report(exc, verbose=kwargs.get("verbose") is True)) from None

    # A function attribute (set through __dict__: the wrapper's type declares none): wrapped once;
    # tests check every command is.
    reporting.__dict__["reports_errors"] = True
    return reporting


@contextmanager
def usage_errors(*types: type[Exception]) -> Iterator[None]:
    """Errors of these builtin types raised inside are the user's input: exit 2, with their text.

    For calls that say a plain ``ValueError`` about an argument (a ``--ds`` that is no date, a
    ``--param`` the run does not take); an mlbatch error inside keeps its own exit code.
    """
    try:
        yield
    except MlbatchError:
        raise
    except types as exc:
        raise UsageError(str(exc)) from exc


def run_step(name: str, thunk: Callable[[], R]) -> R:
    """Call one step of a run; whatever it raises is reported under the step's name."""
    try:
        return thunk()
    except Exception as exc:
        raise StepFailed(name, exc) from exc


def load_spec_or_exit(name_or_path: str, env: Environment) -> ModelSpec:
    """The spec SPEC names; a bad one raises SpecError, which the command exits 2 with."""
    return find_spec(name_or_path, env.specs_dir)


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
    from mlbatch.stages import steps
    from mlbatch.stages.context import RunContext

    _logging(verbose)
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
    from mlbatch.runs import publishing_context

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


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Labels, production model, predictions, export, realized metric, retraining decision and cost of every model."""
    from mlbatch.status import collect

    env = Environment.from_env()
    found = collect(env)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    from mlbatch.status_view import render

    # Wrapped, unlike `out`: the blocks fit the terminal instead of running past its edge.
    Console(markup=False, emoji=False).print(render(found))


@app.command()
def sql(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    ds: Annotated[str, typer.Option(help="The day, YYYY-MM-DD.")],
) -> None:
    """Print the Redshift and Aurora statements production would run for the day (runs nothing)."""
    from mlbatch.statements import production_statements

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    with usage_errors(ValueError):  # a --ds that is no date
        for title, text in production_statements(model, ds):
            print(f"-- {title}\n{text.rstrip()};\n")


def _register_command_modules() -> None:
    import importlib
    import pkgutil

    from mlbatch import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"mlbatch.commands.{info.name}").register(app)


def _report_errors_of_every_command(typer_app: typer.Typer) -> None:
    """Wrap every registered command, those of sub-apps (``models promote``) too, in
    :func:`reports_errors`: here, so that no command can forget it and none prints its own."""
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "reports_errors", False):
            info.callback = reports_errors(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _report_errors_of_every_command(group.typer_instance)


_register_command_modules()
_report_errors_of_every_command(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
