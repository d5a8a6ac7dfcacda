"""Command groups of the ``mlbatch`` CLI, one module per area.

Each module here defines ``register(app: typer.Typer) -> None``; :mod:`mlbatch.cli.app` finds
them with :func:`pkgutil.iter_modules`, so adding a module adds its commands.
"""
