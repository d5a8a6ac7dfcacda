"""The ``mlbatch`` command: run and debug a model's stages without Airflow.

Each module of :mod:`mlbatch.cli.commands` registers its commands on :data:`app`; every
command is then wrapped in :func:`~mlbatch.cli.common.reports_errors`, so that no command can
forget it and none prints its own errors (exit codes: :mod:`mlbatch.cli.common`).
"""

from __future__ import annotations

import typer

from mlbatch.cli.commands import bench, demo, doctor, ecs, images, labels, models, run, status
from mlbatch.cli.common import reports_errors

app = typer.Typer(
    help="Scheduled batch ML on Airflow 3: labels, features, train, score, publish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for module in (run, status, labels, models, demo, doctor, bench, ecs, images):
    module.register(app)


def _report_errors_of_every_command(typer_app: typer.Typer) -> None:
    """Wrap every registered command, those of sub-apps (``models promote``) too, in
    :func:`reports_errors`: here, so that no command can forget it and none prints its own."""
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "reports_errors", False):
            info.callback = reports_errors(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _report_errors_of_every_command(group.typer_instance)


_report_errors_of_every_command(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
