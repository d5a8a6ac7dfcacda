"""``mlbatch doctor [MODEL]``: check every boundary of the configured environment, one line each,
probing each write path the first run will take (sheet verdict column, EXPLAIN of each rendered
query and the Redshift grants, every S3 prefix, the Aurora load role, each model's ECS
task-definition families and whether its jobs place on ``MLBATCH_ECS_INSTANCE_TYPES``, IAM's
policy simulator for the ECS, Redshift and S3 calls). ``docs/deploy.md`` ("Permissions and settings, per AWS service")
names the line that checks each permission.

Exit 0 when nothing failed (``warn`` and ``skip`` lines do not fail), 1 when any check failed,
2 for a bad spec. With MODEL only that model's queries, prefixes, ECS families, placement, label
sheet and GPU needs are checked.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated

import typer
from rich.text import Text

from mlbatch.backends.embedded import airflow_environment
from mlbatch.backends.env import Environment
from mlbatch.cli.common import configure_logging, load_spec_or_exit, out
from mlbatch.errors import EXIT_GATE
from mlbatch.spec import load_all

_COLOURS = {"ok": "green", "FAIL": "red", "warn": "yellow", "skip": "dim"}


def register(app: typer.Typer) -> None:
    app.command()(doctor)


def doctor(
    model: Annotated[
        str | None,
        typer.Argument(help="Only this model's queries, prefixes, ECS families, sheet and GPU needs (default: all)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Probe connections, warehouse (EXPLAIN, grants), S3 prefixes, app DB, ECS families and placement, IAM, label
    sheets, GPU pool."""
    configure_logging(verbose)
    env = Environment.from_env()
    if not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") and env.appdb_url.startswith("sqlite"):
        # The embedded stack: read the Airflow DB `mlbatch demo` uses (before Airflow is imported).

        os.environ.update(airflow_environment(env))
    specs = [load_spec_or_exit(model, env)] if model else load_all(env.specs_dir)  # SpecError: exit 2

    # The checks load Airflow and the amazon provider (about 2 s): only `mlbatch doctor` pays for them.
    from mlbatch.cli.doctor import run_checks

    checks = run_checks(env, specs)
    failed = [c for c in checks if c.status == "FAIL"]
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            # A Text: a line quotes what a server answered, brackets included (never markup).
            out.print(Text(c.line(), style=_COLOURS[c.status]))
        counts = ", ".join(
            f"{sum(c.status == s for c in checks)} {s}" for s in _COLOURS if any(c.status == s for c in checks)
        )
        summary = (
            f"{len(failed)} of {len(checks)} checks failed ({counts})" if failed else f"no check failed ({counts})"
        )
        out.print(summary, highlight=False)
    if failed:
        raise typer.Exit(EXIT_GATE)
