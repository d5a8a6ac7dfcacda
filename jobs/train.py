"""Train one model version: features (UNLOAD manifest) + labels (parquet) -> model artifacts.

    python -m jobs.train --config CONFIG_JSON_URI --features MANIFEST_URI \\
        --labels LABELS_PARQUET_URI --output OUTPUT_PREFIX_URI

Writes under OUTPUT_PREFIX: the family's model file(s) (xgboost: model.json; torch: model.pt +
preprocessing.json), model_meta.json, feature_schema.json, metrics.json, feature_importance.json
(xgboost's gain, or permutation importance on the test rows: jobs.importance), lineage.json,
roc.png and pr.png (one-vs-rest curves per class for multiclass; skipped only where matplotlib is
missing) and, last, _SUCCESS.
A prefix that already holds _SUCCESS is finished: the job exits 0 without retraining, so a
launcher retry never produces a second, different model under the same version.
While it trains, the job keeps a checkpoint in OUTPUT_PREFIX/checkpoint/ (jobs.checkpoint;
``params.checkpoint`` sets its window); a rerun of an unfinished job resumes from it, and it is
removed once _SUCCESS is written.
Exit codes: 0 done (or already done); 2 bad input or config (stderr names it); 1 a crash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import entrypoint, importance, io
from jobs.checkpoint import FOLDER as CHECKPOINT_FOLDER
from jobs.checkpoint import PARAM, Checkpointer, Window, fingerprint, save_on_sigterm
from jobs.contract import ConfigError, TrainConfig
from jobs.entrypoint import run_once
from jobs.families.columns import size_thread_pools
from jobs.io import JobInputError

if TYPE_CHECKING:  # the families load lazily: --help and a no-op retry import no model library
    from jobs.families import Family


def provenance() -> dict[str, str | None]:
    """What ran this job: the image and code version baked into the job image at build time
    (``MLBATCH_IMAGE``, ``MLBATCH_CODE_VERSION``; see mlbatch.backends.launchers.images). Outside an image
    (the local launcher) there is no image, and the code version is a hash of jobs/'s sources.
    """
    image = os.environ.get("MLBATCH_IMAGE") or None
    version = os.environ.get("MLBATCH_CODE_VERSION")
    if not version:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        version = f"source-{h.hexdigest()[:16]}"
    return {"image": image, "code_version": version}


def log(msg: str) -> None:
    entrypoint.log("train", msg)


def load_config(uri: str) -> TrainConfig:
    """The job's config, parsed by the contract mlbatch's train stage writes it with."""
    try:
        return TrainConfig.parse(io.read_json(uri))
    except ConfigError as exc:
        raise JobInputError(f"config {uri}: {exc}") from exc


def read_labels(uri: str, classes: list[str]) -> pa.Table:
    """The labels snapshot: columns entity_key, label; each key once, each label one of classes."""
    fs, path = io.filesystem_for(uri)
    try:
        table = pq.read_table(path, filesystem=fs)
    except (FileNotFoundError, OSError, pa.ArrowInvalid) as exc:
        raise JobInputError(f"labels {uri}: cannot read parquet: {exc}") from exc
    missing = [c for c in ("entity_key", "label") if c not in table.column_names]
    if missing:
        raise JobInputError(f"labels {uri}: missing column(s) {missing}; it has {table.column_names}")
    table = table.select(["entity_key", "label"])
    if table.column("entity_key").null_count:
        raise JobInputError(f"labels {uri}: {table.column('entity_key').null_count} rows have a null entity_key")
    labels = pc.cast(table.column("label"), pa.string())
    bad = pc.invert(pc.fill_null(pc.is_in(labels, value_set=pa.array(classes)), False))
    if pc.any(bad).as_py():
        counts = pc.value_counts(labels.filter(bad)).to_pylist()
        shown = ", ".join(f"{c['values']!r} ({c['counts']})" for c in counts[:10])
        raise JobInputError(f"labels {uri}: {pc.sum(bad).as_py()} rows have a label not in classes {classes}: {shown}")
    keys = table.column("entity_key")
    if pc.count_distinct(keys).as_py() != len(keys):
        dup = [v["values"] for v in pc.value_counts(keys).to_pylist() if v["counts"] > 1][:5]
        raise JobInputError(f"labels {uri}: entity_key values occur more than once, e.g. {dup}")
    return table.set_column(1, "label", labels)


def _align_key_types(labels_keys: pa.ChunkedArray, feature_type: pa.DataType, uri: str) -> pa.ChunkedArray:
    """Labels may hold the key as string or int64; the feature column's type decides."""
    if labels_keys.type == feature_type:
        return labels_keys
    try:
        return pc.cast(labels_keys, feature_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise JobInputError(
            f"labels {uri}: entity_key is {labels_keys.type} and cannot be read as the features' {feature_type}: {exc}"
        ) from exc


def split_indices(y: np.ndarray, valid: float, test: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train/valid/test row indices: the same inputs give the same split."""
    # scikit-learn: only a training run's validation split needs it.
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test_idx = train_test_split(idx, test_size=test, stratify=y, random_state=seed)
    train_idx, valid_idx = train_test_split(rest, test_size=valid / (1 - test), stratify=y[rest], random_state=seed)
    return np.sort(train_idx), np.sort(valid_idx), np.sort(test_idx)


def read_features(uri: str, key: str) -> tuple[pa.Table, pa.ChunkedArray, dict[str, Any]]:
    """The training unload (every part, counts checked), its key column, and its manifest.
    Each key at most once: a key in two rows would give one label two feature rows."""
    manifest = io.read_manifest(uri)
    features = io.read_manifest_table(uri, manifest["entries"])
    if key not in features.column_names:
        raise JobInputError(f"features {uri}: no entity key column {key!r}; columns are {features.column_names}")
    if features.num_columns < 2:
        raise JobInputError(f"features {uri}: no feature columns besides {key!r}")
    keys = features.column(key)
    if pa.types.is_dictionary(keys.type):
        keys = pc.cast(keys, keys.type.value_type)
    # (rows with a null key match no label and are simply not used)
    if pc.count_distinct(keys).as_py() != len(keys) - keys.null_count:
        dup = [v["values"] for v in pc.value_counts(keys).to_pylist() if v["counts"] > 1][:5]
        raise JobInputError(f"features {uri}: {key} values occur in more than one row, e.g. {dup}")
    return features, keys, manifest


@dataclass(frozen=True)
class Matched:
    """The labelled feature rows: features without the key, class indices, and how many."""

    x: pa.Table
    y: np.ndarray
    rows: int


def match_labels(
    cfg: TrainConfig, features: pa.Table, feature_keys: pa.ChunkedArray, labels: pa.Table, uris: tuple[str, str]
) -> Matched:
    """Inner join of features and labels by key; enough rows overall and per class, or an error
    that names both inputs."""
    features_uri, labels_uri = uris
    key, classes = cfg.entity_key, cfg.classes
    label_keys = _align_key_types(labels.column("entity_key"), feature_keys.type, labels_uri)
    pos = pc.index_in(feature_keys, value_set=label_keys)  # each feature row's label (null: unlabelled)
    matched = pc.is_valid(pos)
    n = pc.sum(matched).as_py() or 0
    if n == 0:
        raise JobInputError(
            f"0 of {labels.num_rows} labels matched a feature row by {key} "
            f"(labels {labels_uri}, e.g. {label_keys.slice(0, 3).to_pylist()}; "
            f"features {features_uri}, {features.num_rows} rows, e.g. {feature_keys.slice(0, 3).to_pylist()})"
        )
    if n < cfg.min_rows:
        raise JobInputError(
            f"only {n} of {labels.num_rows} labels matched a feature row by {key}; training needs at least "
            f"{cfg.min_rows} (labels {labels_uri}, features {features_uri})"
        )
    y_str = pc.take(labels.column("label"), pos.filter(matched))
    y = pc.index_in(y_str, value_set=pa.array(classes)).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(y, minlength=len(classes))
    short = {c: int(k) for c, k in zip(classes, counts, strict=True) if k < 3}
    if short:
        raise JobInputError(
            f"class(es) with fewer than 3 labelled rows matched to features: {short}; every class needs rows "
            f"in train, validation and test (labels {labels_uri})"
        )
    by_class = dict(zip(classes, counts.tolist(), strict=True))
    log(f"{n} of {labels.num_rows} labels matched a feature row; class counts {by_class}")
    return Matched(features.filter(matched).drop_columns([key]), y, n)


@dataclass(frozen=True)
class Fitted:
    """A fitted, saved model and what it showed on the held-out rows."""

    model: Family
    metrics: dict[str, Any]  # metrics.json
    meta: dict[str, Any]  # the family's part of model_meta.json
    split: tuple[np.ndarray, np.ndarray, np.ndarray]  # train, valid, test row indices
    y_test: np.ndarray
    proba: np.ndarray  # class probabilities of the test rows


def checkpointer(cfg: TrainConfig, manifest: dict[str, Any], labels_uri: str, data: Matched, out: str) -> Checkpointer:
    """This job's checkpoint under ``out``, fingerprinted by what decides the model: the config
    (less the checkpoint window), the unload's files, the labels matched, the code version."""
    window = Window.parse(cfg.params.get(PARAM))
    config = cfg.to_dict()
    config["params"] = {k: v for k, v in cfg.params.items() if k != PARAM}
    parts = {
        "config": config,
        "features": [(e["url"], int(e["meta"]["record_count"])) for e in manifest["entries"]],
        "schema": str(data.x.schema),
        "labels": labels_uri,
        "y": np.ascontiguousarray(data.y, dtype=np.int64).tobytes(),
        "code_version": provenance()["code_version"],
    }
    return Checkpointer(out, {"model": cfg.model, "version": cfg.version}, fingerprint(**parts), window)


def fit_and_evaluate(cfg: TrainConfig, data: Matched, out: str, checkpoint: Checkpointer | None = None) -> Fitted:
    """Split, fit the family, measure on the held-out test rows, save the model under ``out``."""
    # The families import xgboost and torch (seconds to import): only the job that fits or scores loads them.
    from jobs.families import get_family
    from jobs.metrics import binary_metrics, multiclass_metrics

    split = split_indices(data.y, cfg.split.valid, cfg.split.test, cfg.seed)
    train_idx, valid_idx, test_idx = split
    model = get_family(cfg.family).fit(
        data.x.take(train_idx),
        data.y[train_idx],
        data.x.take(valid_idx),
        data.y[valid_idx],
        classes=cfg.classes,
        params={k: v for k, v in cfg.params.items() if k != PARAM},  # the window is the job's, not the family's
        seed=cfg.seed,
        metric=cfg.metric,
        checkpoint=checkpoint,
    )
    proba = model.predict_proba(data.x.take(test_idx))
    y_test = data.y[test_idx]
    metrics = binary_metrics(y_test, proba[:, 1]) if cfg.binary else multiclass_metrics(y_test, proba, cfg.classes)
    meta = model.save(out)
    metrics.update(
        {
            "task": "binary" if cfg.binary else "multiclass",
            "classes": cfg.classes,
            "metric": cfg.metric,
            "value": metrics[cfg.metric],
            "n_train": len(train_idx),
            "n_valid": len(valid_idx),
            "n_test": len(test_idx),
            "best_iteration": meta.get("best_iteration"),
        }
    )
    return Fitted(model, metrics, meta, split, y_test, proba)


def train(config_uri: str, features_uri: str, labels_uri: str, out: str) -> dict[str, Any]:
    started = time.monotonic()
    size_thread_pools()
    cfg = load_config(config_uri)
    features, feature_keys, manifest = read_features(features_uri, cfg.entity_key)
    log(f"read {features.num_rows} feature rows from {len(manifest['entries'])} files of {features_uri}")
    labels = read_labels(labels_uri, cfg.classes)
    data = match_labels(cfg, features, feature_keys, labels, (features_uri, labels_uri))
    checkpoint = checkpointer(cfg, manifest, labels_uri, data, out)
    try:
        fitted = fit_and_evaluate(cfg, data, out, checkpoint)
    finally:
        checkpoint.finish()
    model, metrics, (train_idx, valid_idx, test_idx) = fitted.model, fitted.metrics, fitted.split
    meta = {
        **fitted.meta,
        "family": cfg.family,
        "model": cfg.model,
        "version": cfg.version,
        "entity_key": cfg.entity_key,
        "entity_key_type": str(feature_keys.type),
    }
    lineage = {
        **cfg.lineage,
        "model": cfg.model,
        "version": cfg.version,
        "config": config_uri,
        "features_manifest": features_uri,
        "labels": labels_uri,
        "output": out,
        "rows": {
            "features": features.num_rows,
            "labels": labels.num_rows,
            "matched": data.rows,
            "labels_unmatched": labels.num_rows - data.rows,
            "train": len(train_idx),
            "valid": len(valid_idx),
            "test": len(test_idx),
        },
        "family": cfg.family,
        "params": model.effective_params,
        "seed": cfg.seed,
        "split": asdict(cfg.split),
        **provenance(),
        **model.library_versions,
        "device_trained": meta.get("device_trained"),
        "checkpoint": checkpoint.summary(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # The families import xgboost and torch (seconds to import): only the job that fits or scores loads them.
    from jobs.metrics import curve_pngs

    io.write_json(io.join_uri(out, "model_meta.json"), meta)
    io.write_json(
        io.join_uri(out, "feature_schema.json"), [{"name": f.name, "type": str(f.type)} for f in data.x.schema]
    )
    io.write_json(io.join_uri(out, "metrics.json"), metrics)
    io.write_json(io.join_uri(out, "lineage.json"), lineage)
    for name, png in curve_pngs(fitted.y_test, fitted.proba, cfg.classes).items():
        io.write_bytes(io.join_uri(out, name), png)
    io.write_json(
        io.join_uri(out, importance.FILE),
        feature_importance(model, data.x.take(test_idx), fitted.y_test, cfg),
    )
    summary = {
        "status": "trained",
        "model": cfg.model,
        "version": cfg.version,
        "metric": cfg.metric,
        "value": metrics["value"],
        "rows": data.rows,
        "best_iteration": metrics["best_iteration"],
        "seconds": round(time.monotonic() - started, 3),
        "checkpoint": checkpoint.summary(),
        "output": out,
    }
    # Last: the marker is what a launcher retry looks for; everything above is complete by now.
    io.write_json(io.join_uri(out, "_SUCCESS"), summary)
    checkpoint.clear()  # after the marker: a kill in between leaves a checkpoint the marker makes moot
    return summary


def feature_importance(model: Family, test: pa.Table, y_test: np.ndarray, cfg: TrainConfig) -> dict[str, Any]:
    """The family's own figure where it has one (xgboost's gain), else permutation importance of
    the gate metric on the test rows (see jobs.importance)."""
    own: Callable[[], dict[str, Any]] | None = getattr(model, "feature_importance", None)
    if own is not None:
        return own()
    started = time.monotonic()
    try:
        result = importance.permutation_importance(model.predict_proba, test, y_test, cfg.metric, cfg.seed)
    except ValueError as exc:  # e.g. ROC AUC of a sample that holds one class only
        log(f"no permutation importance: {exc}")
        return {"method": "permutation", "metric": cfg.metric, "error": str(exc), "features": []}
    log(
        f"permutation importance of {len(result['features'])} features on {result['rows']} test rows "
        f"in {time.monotonic() - started:.1f} s"
    )
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="URI of the train config JSON")
    p.add_argument("--features", required=True, help="URI of the training features' UNLOAD manifest")
    p.add_argument("--labels", required=True, help="URI of the labels parquet (entity_key, label)")
    p.add_argument("--output", required=True, help="output prefix URI (models/<model>/<version>/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.output if args.output.endswith("/") else args.output + "/"

    def work() -> dict[str, Any]:
        save_on_sigterm()  # a Spot interruption's notice: checkpoint at the next step end, exit 143
        return train(args.config, args.features, args.labels, out)

    return run_once(
        "train",
        out,
        io.join_uri(out, "_SUCCESS"),
        work,
        complete="this model version is complete; not retraining",
        tidy=lambda: io.delete_folder(io.join_uri(out, CHECKPOINT_FOLDER)),  # a kill between marker and removal
    )


if __name__ == "__main__":
    sys.exit(main())
