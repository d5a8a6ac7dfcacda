"""``mlbatch demo``: every spec through the real Airflow DAGs on the embedded stack (a dev command)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Annotated

import typer

from mlbatch.cli.common import out
from mlbatch.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command()(demo)


def import_devtools(module: str, command: str) -> ModuleType:
    """``devtools.<module>``, or a UsageError (exit 2) saying that ``command`` is a development
    command: the devtools package is installed with the repo (``make venv``), not in the Airflow image."""
    try:
        return importlib.import_module(f"devtools.{module}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("devtools", f"devtools.{module}"):
            raise  # devtools is there but something it imports is not: show that, not a wrong hint
        raise UsageError(
            f"`mlbatch {command}` is a development command and needs the devtools package, which "
            "this installation does not have (a deployed image never does). Run it from a checkout "
            "after `make venv`."
        ) from None


def demo(
    ds: Annotated[str, typer.Option(help="The day the demo runs.")] = "2026-11-22",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Airflow's task logs.")] = False,
    model: Annotated[list[str] | None, typer.Option(help="Only this model (repeatable); default: every spec.")] = None,
) -> None:
    """Run every spec the demo can make data for through the real Airflow DAGs, on the embedded stack."""
    code = import_devtools("demo", "demo").run_demo(ds, verbose=verbose, console=out, models=model)
    raise typer.Exit(code)
