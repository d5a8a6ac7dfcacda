"""Run params shared by the DAGs' trigger form and ``mlbatch run --param``.

Kept free of heavy imports: the DAG factory reads it at parse time.
"""

from __future__ import annotations

from typing import Any

DRY_RUN = "dry_run"
MODEL_VERSION = "model_version"
FORCE_RETRAIN = "force_retrain"
KNOWN = (DRY_RUN, MODEL_VERSION, FORCE_RETRAIN)

# Tasks (and CLI steps) that write what users see: skipped in a dry run, so only reads and
# gates run. Names are the DAG task ids; CLI step names match them.
WRITERS = frozenset({"apply_labels", "realized_performance", "train", "register", "model_gate", "publish", "export"})
# What `mlbatch run` skips in a dry run: the writers and the check of what a writer wrote (in a
# DAG, Airflow skips it on its own because its upstream was skipped).
CLI_DRY_RUN_SKIPS = WRITERS | {"export_gate"}


def parse(items: list[str]) -> dict[str, Any]:
    """``["dry_run=true", "model_version=20261122-ab12cd34"]`` → a params dict.

    Raises ValueError naming the item when it is not ``name=value`` or the name is unknown.
    """
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in KNOWN:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE with NAME one of {', '.join(KNOWN)}")
        if name in (DRY_RUN, FORCE_RETRAIN):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"--param {item!r}: {name} takes true or false")
            params[name] = value.lower() in ("true", "1", "yes")
        else:
            params[name] = value
    return params
