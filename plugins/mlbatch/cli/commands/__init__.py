"""Command groups of the ``mlbatch`` CLI, one module per area.

Each module here defines ``register(app: typer.Typer) -> None``; :mod:`mlbatch.cli.app` imports
each and calls it (a new module is one more name in its list).
"""
