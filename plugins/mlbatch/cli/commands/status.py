"""``mlbatch status`` (every model at a glance) and ``mlbatch sql`` (what production would run for a day)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from mlbatch.backends.env import Environment
from mlbatch.cli.common import load_spec_or_exit, usage_errors
from mlbatch.reporting.statements import production_statements
from mlbatch.reporting.status import collect
from mlbatch.reporting.status_view import render


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(sql)


def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Labels, production model, predictions, export, realized metric, retraining decision and cost of every model."""

    env = Environment.from_env()
    found = collect(env)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return

    # Wrapped, unlike `out`: the blocks fit the terminal instead of running past its edge.
    Console(markup=False, emoji=False).print(render(found))


def sql(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    ds: Annotated[str, typer.Option(help="The day, YYYY-MM-DD.")],
) -> None:
    """Print the Redshift and Aurora statements production would run for the day (runs nothing)."""

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    with usage_errors(ValueError):  # a --ds that is no date
        for title, text in production_statements(model, ds):
            print(f"-- {title}\n{text.rstrip()};\n")
