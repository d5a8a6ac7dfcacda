"""A Celery configuration for Airflow's workers: Airflow's own, plus mlbatch's task code imported
once per worker instead of once per task.

    [celery]
    celery_config_options = mlbatch.airflow.worker_preload.CELERY_CONFIG

Why. On Linux, Airflow 3 runs each task in a process forked (no exec) from the worker's task
supervisor (``airflow.sdk.execution_time.supervisor``): whatever the worker imported before the
fork is already in every task process, and whatever it did not, each task imports again. A task
that does no data work (``resolve_model``, ``export_gate``) spends most of its time there: the
stage modules with pyarrow, SQLAlchemy and the app DB's and warehouse's backends, and boto3.
Measured in ``benchmarks/README.md`` (``bench_scheduler.py``, with and without this).

Only the worker imports them (Celery's ``worker_init``, in the worker's main process before its
pool processes fork): the scheduler and the API server, which load the same configuration to send
tasks, import nothing more. Nothing is connected or started here (no client, no thread), so the
fork copies no connection or lock: each task still opens its own.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

log = logging.getLogger(__name__)

CELERY_CONFIG: dict[str, Any] = DEFAULT_CELERY_CONFIG


# The backends an Environment picks by URL at run time (each imported by its first task otherwise).
BACKENDS = (
    "mlbatch.backends.appdb.mysql_publish",
    "mlbatch.backends.appdb.postgres_publish",
    "mlbatch.backends.warehouse.redshift",
    "mlbatch.backends.warehouse.duckdb_warehouse",
    "mlbatch.backends.launchers.local",
    "mlbatch.backends.launchers.docker",
    "mlbatch.backends.launchers.ecs",
)


def preload(**_: Any) -> None:
    """Import every module a task of mlbatch's DAGs runs, as those tasks would."""
    started = time.perf_counter()
    # Here, not at the top: the scheduler and the API server load this module too, and must not
    # pay for them; each is what a task would otherwise import itself.
    import boto3  # noqa: F401  (the object store's and the AWS launchers' clients)
    import pyarrow.dataset  # noqa: F401  (the shards' and the unloads' reads)
    import pyarrow.parquet  # noqa: F401

    from mlbatch.airflow.pipeline import DAGS, resolve  # the stages each DAG step calls

    for steps in DAGS.values():
        for step in steps.steps:
            if step.call:  # None: an approval, which Airflow runs itself
                resolve(step.call)
    for module in BACKENDS:
        importlib.import_module(module)
    log.info("mlbatch: task code imported in the worker in %.2f s", time.perf_counter() - started)


worker_init.connect(preload, weak=False)  # kept for the worker's life, whatever holds this module
