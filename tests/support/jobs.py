"""Inputs of the job entrypoints (features as an UNLOAD manifest, labels, a train config) and a
runner that starts ``python -m jobs.<x>`` as the launchers do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.paths import REPO

N = 5000


FAST = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.3, "early_stopping_rounds": 10}


def run_job(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLBATCH_CODE_VERSION": "test-sha", "MLBATCH_XGB_DEVICE": "cpu", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def features_table(n: int = N, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """Features for device_id 1000.. with a signal in x1 and the brand; returns (table, truth)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    brands = np.array(["apple", "samsung", "xiaomi", "nokia"])
    brand = brands[rng.integers(0, 4, n)]
    logit = 2.0 * x1 + np.where(brand == "apple", 1.5, 0.0) - 0.3
    truth = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    x1_nulls = np.where(rng.random(n) < 0.05, np.nan, x1)
    brand_arr = pa.array(brand.tolist(), pa.string())
    brand_arr = pa.array([None if i % 37 == 0 else b for i, b in enumerate(brand_arr.to_pylist())], pa.string())
    table = pa.table(
        {
            "device_id": pa.array(np.arange(1000, 1000 + n), pa.int64()),
            "x1": pa.array(x1_nulls, pa.float64(), from_pandas=True),
            "x2": pa.array(x2.astype(np.float32)),
            "n_apps": pa.array(rng.integers(0, 50, n), pa.int32()),
            "brand": brand_arr,
        }
    )
    return table, truth


def write_unload(table: pa.Table, directory: Path, parts: int = 2, lie: int = 0) -> str:
    """Parquet parts + a Redshift MANIFEST VERBOSE; ``lie`` overstates part 0's record_count."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    entries = []
    for i in range(parts):
        path = directory / f"{i:04d}_part_00.parquet"
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), path)
        count = int(bounds[i + 1] - bounds[i]) + (lie if i == 0 else 0)
        entries.append({"url": path.as_uri(), "meta": {"content_length": path.stat().st_size, "record_count": count}})
    base = {"int64": "bigint", "int32": "integer", "double": "double precision", "float": "real"}
    manifest = {
        "entries": entries,
        "schema": {
            "elements": [
                {"name": f.name, "type": {"base": base.get(str(f.type), "character varying")}} for f in table.schema
            ]
        },
        "meta": {
            "content_length": sum(e["meta"]["content_length"] for e in entries),
            "record_count": sum(e["meta"]["record_count"] for e in entries),
        },
        "author": {"name": "Amazon Redshift", "version": "1.0.0"},
    }
    (directory / "manifest").write_text(json.dumps(manifest))
    return (directory / "manifest").as_uri()


def write_labels(path: Path, keys: np.ndarray, labels: list[str]) -> str:
    pq.write_table(pa.table({"entity_key": pa.array(keys, pa.int64()), "label": labels}), path)
    return path.as_uri()


def write_config(path: Path, classes: list[str], **extra: object) -> str:
    cfg = {
        "model": "device_gender",
        "version": "v1",
        "entity_key": "device_id",
        "classes": classes,
        "family": "xgboost",
        "params": FAST,
        "metric": "roc_auc",
        "seed": 7,
        "lineage": {"label_sync_id": 42},
        **extra,
    }
    path.write_text(json.dumps(cfg))
    return path.as_uri()


def put_parquet(store, key: str, table: pa.Table) -> str:
    """Write ``table`` to ``key`` of an object store (any root: file:// or s3://); its URI."""
    from mlbatch.backends.store import filesystem_for

    uri = store.uri(key)
    fs, path = filesystem_for(uri)
    pq.write_table(table, path, filesystem=fs)
    return uri


def put_train_inputs(store, *, n: int, unload_prefix: str, version: str) -> dict[str, str]:
    """What a launcher test's train job reads, in an object store: a two-part UNLOAD (parquet + a
    Redshift manifest) under ``unload_prefix``, a labels snapshot of 2,400 keys and the job config
    of ``version``; the URIs by argument (``manifest``, ``labels``, ``config``, ``model``)."""
    table, truth = features_table(n=n, seed=5)
    entries = []
    for i, part in enumerate((table.slice(0, n // 2), table.slice(n // 2))):
        uri = put_parquet(store, f"{unload_prefix}{i:04d}_part_00.parquet", part)
        entries.append({"url": uri, "meta": {"content_length": 0, "record_count": part.num_rows}})
    manifest = {"entries": entries, "meta": {"record_count": n}, "schema": {"elements": []}}
    store.put_bytes(f"{unload_prefix}manifest", json.dumps(manifest).encode())
    classes = ["female", "male"]
    labels = pa.table(
        {"entity_key": pa.array(np.arange(1000, 3400), pa.int64()), "label": [classes[t] for t in truth[:2400]]}
    )
    config = {
        "model": "device_gender",
        "version": version,
        "entity_key": "device_id",
        "classes": classes,
        "family": "xgboost",
        "params": FAST,
        "metric": "roc_auc",
        "seed": 7,
        "lineage": {"label_sync_id": 9},
    }
    store.put_bytes(f"models/device_gender/{version}/job_config.json", json.dumps(config).encode())
    return {
        "manifest": store.uri(f"{unload_prefix}manifest"),
        "labels": put_parquet(store, "labels/device_gender/9.parquet", labels),
        "config": store.uri(f"models/device_gender/{version}/job_config.json"),
        "model": store.uri(f"models/device_gender/{version}") + "/",
    }
