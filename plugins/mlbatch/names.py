"""Every name mlbatch gives its data: object keys and prefixes in the store, and table names.

Small pure functions of (model, day, run, ...), no I/O and nothing heavy to import: DAG files
(at parse time), the CLI, the stages and the backends all build their names here, so a key is
spelled in one place and every reader finds what the writer wrote. Existing data depends on
these strings: ``tests/unit/test_names.py`` pins each one, and guards that no other module of the
package builds them itself.

The object store's layout (keys are relative to its root, ``MLBATCH_OBJECT_STORE``)::

    labels/<model>/<sync_id>.parquet                       label snapshot of a sync that changed labels
    labels/<model>/staged/<sync_id>.parquet                the checked sheet, before the sync applies it
    unload/<model>/<train|score>/<ds>/<run_key>/           the warehouse's UNLOAD (parts, then ``manifest``)
    models/<model>/<version>/                              a trained version (the train job's output folder)
    predictions/<model>/<ds>/<run_key>/part-NNNN.parquet   a scoring shard (the score job's output)
    predictions/<model>/<ds>/summary.json                  the published day's summary
    runs/<model>/<ds>/<run_key>/<name>.json                a run's step results (its state)
    export/<model>/<ds>/part-0000.parquet                  the day's warehouse export (COPY reads the folder)
    publish/<model>/<ds>/<run_key>/predictions-NNN.tsv     Aurora's LOAD DATA FROM S3 staging (scratch)
    costs/<model>/<YYYY-MM>/<kind>-<run_key>.json          a run's cost line
    realized/<model>/state.json                            realized performance: what was measured
    realized/<model>/days/<ds>.parquet                     realized performance: a day's labelled rows
    retrain/<model>/last_training.json                     the last training start

``<run_key>`` is :func:`run_key` of the Airflow run id. The files inside a model version's folder
(``metrics.json``, ``lineage.json``, ``_SUCCESS``, ...) and a shard's ``._SUCCESS`` marker are
named by the jobs that write them (``jobs/``), which is why they are not here.

The jobs never import mlbatch (their images hold neither it nor Airflow: import-linter's
contract), so they never call this module: the stage that launches a job builds the keys here and
hands them over as full URIs in the job's config and arguments (the train job's ``job_config.json``
and output folder, :func:`model_prefix`; each score shard's ``--output``, :func:`shard_key`; the
features ``manifest``, :func:`manifest_key`). A job writes only where it is told.

Tables: each model has ``<model>_predictions`` and ``<model>_history`` in the app DB and
``ml_exports.<model>_predictions`` in the warehouse; the app DB's shared tables have fixed names
(``*_TABLE``; :mod:`mlbatch.backends.appdb.schema` defines their columns).
"""

from __future__ import annotations

import hashlib
import re

# Top-level folders of the object store, one per kind of data (an IAM policy or a lifecycle rule
# may name them one by one: ``mlbatch doctor`` probes them, deploy/s3/lifecycle.json expires two).
LABELS_ROOT = "labels/"
UNLOAD_ROOT = "unload/"
MODELS_ROOT = "models/"
PREDICTIONS_ROOT = "predictions/"
RUNS_ROOT = "runs/"
EXPORT_ROOT = "export/"
PUBLISH_ROOT = "publish/"
COSTS_ROOT = "costs/"
REALIZED_ROOT = "realized/"
RETRAIN_ROOT = "retrain/"

MANIFEST = "manifest"  # the object an UNLOAD writes last in its prefix (Redshift's MANIFEST VERBOSE)

# The app DB's shared tables (one row per model and ...).
LABELS_TABLE = "ml_labels"
LABEL_SYNCS_TABLE = "ml_label_syncs"
LABEL_HISTORY_TABLE = "ml_label_history"
MODEL_VERSIONS_TABLE = "ml_model_versions"
PUBLISH_LOG_TABLE = "ml_publish_log"
REALIZED_PERFORMANCE_TABLE = "ml_realized_performance"
MODEL_FLAGS_TABLE = "ml_model_flags"

EXPORT_SCHEMA = "ml_exports"  # the warehouse schema of every model's export table
PREDICTIONS_SUFFIX = "_predictions"
HISTORY_SUFFIX = "_history"
BASE_SUFFIX = "_base"


def model_folder(root: str, model: str) -> str:
    """``<root><model>/``: a model's folder under one of the ``*_ROOT`` folders."""
    return f"{root}{model}/"


def run_key(run_id: str) -> str:
    """The run as a path segment: its id with unsafe characters dropped (at most 60 kept), then a
    hash of the whole id, so two ids that differ only in dropped characters stay apart.

    ``scheduled__2026-11-22T00:00:00+00:00`` gives ``scheduled__2026-11-22T0000000000-71bbca``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "", run_id)[:60]
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}"


# Labels.


def labels_snapshot_key(model: str, sync_id: str) -> str:
    """``labels/<model>/<sync_id>.parquet``: the labels after a sync that changed them (what training reads)."""
    return f"{model_folder(LABELS_ROOT, model)}{sync_id}.parquet"


def staged_labels_key(model: str, sync_id: str) -> str:
    """``labels/<model>/staged/<sync_id>.parquet``: the labels a check accepted, before the sync applies them."""
    return f"{model_folder(LABELS_ROOT, model)}staged/{sync_id}.parquet"


# Features.


def unload_prefix(model: str, purpose: str, ds: str, run_key: str) -> str:
    """``unload/<model>/<purpose>/<ds>/<run_key>/``: a run's features unload (``purpose``: train or score)."""
    return f"{model_folder(UNLOAD_ROOT, model)}{purpose}/{ds}/{run_key}/"


def manifest_key(model: str, purpose: str, ds: str, run_key: str) -> str:
    """The unload's ``manifest``, written last: a prefix without one is a failed attempt."""
    return unload_prefix(model, purpose, ds, run_key) + MANIFEST


# Models.


def model_prefix(model: str, version: str) -> str:
    """``models/<model>/<version>/``: a trained version's folder (the train job's output)."""
    return f"{model_folder(MODELS_ROOT, model)}{version}/"


# Predictions.


def predictions_prefix(model: str, ds: str, run_key: str) -> str:
    """``predictions/<model>/<ds>/<run_key>/``: a run's scoring shards."""
    return f"{model_folder(PREDICTIONS_ROOT, model)}{ds}/{run_key}/"


def shard_key(model: str, ds: str, run_key: str, shard: int) -> str:
    """``predictions/<model>/<ds>/<run_key>/part-NNNN.parquet``: one score shard's output."""
    return f"{predictions_prefix(model, ds, run_key)}part-{shard:04d}.parquet"


def summary_key(model: str, ds: str) -> str:
    """``predictions/<model>/<ds>/summary.json``: the published day's summary (one per day, not per run)."""
    return f"{model_folder(PREDICTIONS_ROOT, model)}{ds}/summary.json"


# A run's state.


def runs_prefix(model: str, ds: str) -> str:
    """``runs/<model>/<ds>/``: the state of every run of the day (one folder per run key)."""
    return f"{model_folder(RUNS_ROOT, model)}{ds}/"


def run_prefix(model: str, ds: str, run_key: str) -> str:
    """``runs/<model>/<ds>/<run_key>/``: one run's state."""
    return f"{runs_prefix(model, ds)}{run_key}/"


def state_key(model: str, ds: str, run_key: str, name: str) -> str:
    """``runs/<model>/<ds>/<run_key>/<name>.json``: one step result of a run."""
    return f"{run_prefix(model, ds, run_key)}{name}.json"


def key_sample_key(model: str, ds: str, run_key: str) -> str:
    """``runs/<model>/<ds>/<run_key>/key_sample.parquet``: the prediction gate's sample of the day's
    keys, from which the publish cuts its key ranges."""
    return f"{run_prefix(model, ds, run_key)}key_sample.parquet"


# Publish and export.


def publish_prefix(model: str, ds: str, run_key: str) -> str:
    """``publish/<model>/<ds>/<run_key>/``: a run's TSVs for Aurora's LOAD DATA FROM S3 (scratch)."""
    return f"{model_folder(PUBLISH_ROOT, model)}{ds}/{run_key}/"


def publish_share_key(model: str, ds: str, run_key: str, index: int) -> str:
    """``publish/<model>/<ds>/<run_key>/predictions-NNN.tsv``: one load session's share of the day."""
    return f"{publish_prefix(model, ds, run_key)}predictions-{index:03d}.tsv"


def export_prefix(model: str, ds: str) -> str:
    """``export/<model>/<ds>/``: the day's export folder (the warehouse's COPY reads all of it)."""
    return f"{model_folder(EXPORT_ROOT, model)}{ds}/"


def export_key(model: str, ds: str) -> str:
    """``export/<model>/<ds>/part-0000.parquet``: the day's export file, the only object in its folder."""
    return f"{export_prefix(model, ds)}part-0000.parquet"


# Costs, monitoring, retraining.


def costs_prefix(model: str, month: str) -> str:
    """``costs/<model>/<YYYY-MM>/``: the cost lines of a model's runs in a month."""
    return f"{model_folder(COSTS_ROOT, model)}{month}/"


def cost_key(model: str, month: str, kind: str, run_key: str) -> str:
    """``costs/<model>/<YYYY-MM>/<kind>-<run_key>.json``: one run's cost line (``kind``: train or score)."""
    return f"{costs_prefix(model, month)}{kind}-{run_key}.json"


def realized_state_key(model: str) -> str:
    """``realized/<model>/state.json``: the last label change measured and the days measured."""
    return f"{model_folder(REALIZED_ROOT, model)}state.json"


def realized_day_key(model: str, ds: str) -> str:
    """``realized/<model>/days/<ds>.parquet``: a measured day's labelled predictions."""
    return f"{model_folder(REALIZED_ROOT, model)}days/{ds}.parquet"


def last_training_key(model: str) -> str:
    """``retrain/<model>/last_training.json``: the model's last training start (``train.retrain``)."""
    return f"{model_folder(RETRAIN_ROOT, model)}last_training.json"


# Tables.


def predictions_table(model: str) -> str:
    """``<model>_predictions`` (app DB): one row per entity, from the newest day that scored it."""
    return f"{model}{PREDICTIONS_SUFFIX}"


def history_table(model: str) -> str:
    """``<model>_history`` (app DB): every published day's predictions, one row per (entity, day)."""
    return f"{model}{HISTORY_SUFFIX}"


def base_table(model: str) -> str:
    """``<model>_base`` (app DB, ``publish.mode: partitioned``): the last prediction of each entity
    whose days have left ``<model>_history``."""
    return f"{model}{BASE_SUFFIX}"


def model_of_predictions_table(table: str) -> str:
    """The model a ``<model>_predictions`` table belongs to (the inverse of :func:`predictions_table`)."""
    return table.removesuffix(PREDICTIONS_SUFFIX)


def export_table(model: str) -> str:
    """``ml_exports.<model>_predictions`` (warehouse): every published day's predictions, by day."""
    return f"{EXPORT_SCHEMA}.{predictions_table(model)}"
