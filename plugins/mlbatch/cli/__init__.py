"""The ``mlbatch`` command line: ``app`` (the typer app), ``commands/`` (one module per group of
commands) and ``doctor/`` (the checks of a deployment)."""
