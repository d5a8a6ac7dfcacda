"""``mlbatch labels``: check a sheet export against a spec, sync a model's sheet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlbatch.cli import EXIT_GATE, EXIT_USAGE, err, load_spec_or_exit, out
from mlbatch.env import Environment

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
    from mlbatch.labels.check import LabelFileError, check_labels, read_csv

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    try:
        header, rows = read_csv(file)
    except (LabelFileError, OSError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    threshold = model.labels.max_invalid_fraction if max_invalid_fraction is None else max_invalid_fraction
    report = check_labels(
        header,
        rows,
        model=model.name,
        key_column=model.labels.columns.key,
        label_column=model.labels.columns.label,
        classes=model.labels.classes,
        key_type=model.entity.type,
        max_invalid_fraction=threshold,
    )
    if as_json:
        print(json.dumps(report.to_contract(), indent=2, ensure_ascii=False))
    else:
        for r in report.rejected:
            out.print(f"row {r.row}: {report.verdicts.get(r.row, r.reason)}", highlight=False)
        out.print(report.message, highlight=False)
    if report.blocked:
        raise typer.Exit(EXIT_GATE)
