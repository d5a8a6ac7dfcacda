"""``mlbatch labels``: check a sheet export against a spec, sync a model's sheet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlbatch.backends.env import Environment
from mlbatch.cli.common import configure_logging, load_spec_or_exit, out, run_step, usage_errors
from mlbatch.cli.steps import steps
from mlbatch.errors import EXIT_GATE
from mlbatch.labels.check import read_csv
from mlbatch.labels.grid import SheetData
from mlbatch.stages.context import RunContext
from mlbatch.stages.labels import check, preview

if TYPE_CHECKING:
    from mlbatch.stages.context import RunContext

labels_app = typer.Typer(help="Check and sync a model's label sheet.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(labels_app, name="labels")


@labels_app.command("check")
def labels_check(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    file: Annotated[Path, typer.Option(help="CSV export of the label sheet.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    max_invalid_fraction: Annotated[float | None, typer.Option(help="Override the spec's threshold.")] = None,
) -> None:
    """Check a sheet export against the spec without touching any database (exit 1 if blocked)."""

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    with usage_errors(OSError):  # no such file, no permission: the --file given (LabelFileError: exit 2 too)
        header, rows = read_csv(file)
    report = check(model, SheetData(header, rows, str(file)), max_invalid_fraction)
    if as_json:
        print(json.dumps(report.to_contract(), indent=2, ensure_ascii=False))
    else:
        for r in report.rejected:
            out.print(f"row {r.row}: {report.verdicts.get(r.row, r.reason)}", highlight=False, markup=False)
        out.print(report.message, highlight=False, markup=False)
    if report.blocked:
        raise typer.Exit(EXIT_GATE)


@labels_app.command("sync")
def labels_sync(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the diff it would apply; write nothing (not even verdicts).")
    ] = False,
    limit: Annotated[int, typer.Option(help="Keys shown per kind of change with --dry-run.", min=0)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Sync the model's label sheet into the app DB now: check, gate, apply (exit 1 if blocked).

    The same stage functions as the DAG's check_sheet, labels_gate and apply_labels tasks, with
    run id cli-sync__<UTC time>; verdicts go back to the sheet, and a changed sync writes its
    snapshot (the Airflow asset event is the DAG's to emit).
    """

    if verbose:  # else warnings reach stderr through logging's last-resort handler
        configure_logging(verbose)
    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    now = datetime.now(UTC)
    ctx = RunContext(env=env, spec=model, ds=now.date().isoformat(), run_id=f"cli-sync__{now:%Y%m%dT%H%M%S}")
    if dry_run:
        _sync_dry_run(ctx, limit, as_json)
        return
    results: dict[str, object] = {}
    for name, thunk, _ in steps(ctx, ["labels"]):  # no dry_run param: nothing skipped
        results[name] = run_step(name, thunk)  # a gate that blocks exits 1, named like `mlbatch run` names it
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    else:
        _print_sync(model.name, results)


def _sync_dry_run(ctx: RunContext, limit: int, as_json: bool) -> None:
    """``labels sync --dry-run``: the diff the sync would apply; exit 1 if its gate would block."""

    plan = preview(ctx, limit=limit)
    if as_json:
        print(json.dumps({"model": ctx.spec.name, **plan}, indent=2, ensure_ascii=False))
    else:
        _print_plan(ctx.spec.name, plan)
    if plan["blocked"]:
        raise typer.Exit(EXIT_GATE)


def _print_sync(model: str, results: dict[str, object]) -> None:
    checked, applied = results["check_sheet"], results["apply_labels"]
    assert isinstance(checked, dict) and isinstance(applied, dict)
    out.print(f"{model}: {checked['message']}", highlight=False, soft_wrap=True, markup=False)
    if applied["changed"]:
        out.print(
            f"sync {applied['sync_id']}: inserted {applied['inserted']:,}, updated {applied['updated']:,}, "
            f"deleted {applied['deleted']:,}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    else:
        out.print(f"sync {applied['sync_id']}: no change", highlight=False, soft_wrap=True, markup=False)


def _print_plan(model: str, plan: dict[str, Any]) -> None:
    out.print(f"{model}: {plan['check']['message']} ({plan['origin']})", highlight=False, soft_wrap=True, markup=False)
    for r in plan["check"]["rejected"][:20]:
        out.print(f"  row {r['row']}: {r['reason']} (key {r['key']!r})", highlight=False, soft_wrap=True, markup=False)
    out.print(
        f"would insert {plan['inserted']:,}, update {plan['updated']:,}, delete {plan['deleted']:,} "
        f"(of {plan['current']:,} current labels)",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    for r in plan["inserts"]:
        out.print(f"  + {r['key']}: {r['new']}", highlight=False, soft_wrap=True, markup=False)
    for r in plan["updates"]:
        out.print(f"  ~ {r['key']}: {r['old']} -> {r['new']}", highlight=False, soft_wrap=True, markup=False)
    for r in plan["deletes"]:
        out.print(f"  - {r['key']}: {r['old']} -> (deleted)", highlight=False, soft_wrap=True, markup=False)
    out.print(
        f"blocked: {plan['blocked_by']}" if plan["blocked"] else "dry run: nothing written",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
