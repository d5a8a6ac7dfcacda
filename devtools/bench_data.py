"""The benchmark's data and the pieces every path shares: the synthetic scoring day (parts +
manifest) and its model, the prediction batch and its TSV, the bench table, the key ranges.

Made once by the parent of ``mlbatch bench`` (:mod:`devtools.bench`); read by each path's child.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DS = "2026-11-22"
NEXT_DS = "2026-11-23"  # the steady-state day: every key of DS re-scored
VERSION = "bench-v1"
MODEL = "bench"
CLASSES = ("female", "male")
FEATURES = 30
ROWS_PER_PART = 500_000
BATCH_ROWS = 65_536
# Bytes of decoded batches the reader may hold ahead of the consumer. Predicting is slower
# than reading, so the reader fills this bound on any day bigger than it: 64 MiB keeps both
# reader threads busy and the peak the same from 1M rows up.
IN_FLIGHT = 64 * 2**20
LOAD_SESSIONS = 2  # as the publish stage: LOAD DATA sessions, one key range each


def feature_names(n: int = FEATURES) -> list[str]:
    return [f"f{i:02d}" for i in range(n)]


# --- data, made once by the parent ------------------------------------------------------------
def prepare(work: Path, rows: int, seed: int = 7) -> dict[str, Any]:
    """N rows × 30 features as Redshift-named parts + manifest, and a small xgboost model."""
    from mlbatch.backends.warehouse.manifest import Manifest

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, start = [], 0
    for part in range(max(1, -(-rows // ROWS_PER_PART))):
        n = min(ROWS_PER_PART, rows - start)
        x = rng.standard_normal((n, FEATURES), dtype=np.float32)
        # Keys ascend across parts, as an UNLOAD of an ORDER BY key query writes them.
        cols = {"entity_key": pa.array(np.arange(start, start + n, dtype=np.int64) + 10_000_000)}
        cols.update({name: pa.array(x[:, i]) for i, name in enumerate(feature_names())})
        path = work / f"{part:04d}_part_00.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=BATCH_ROWS * 2)
        entries.append({"url": path.as_uri(), "meta": {"content_length": path.stat().st_size, "record_count": n}})
        start += n
    schema = {"elements": [{"name": "entity_key", "type": {"base": "bigint"}}]}
    schema["elements"] += [{"name": f, "type": {"base": "real"}} for f in feature_names()]
    manifest = Manifest.model_validate(
        {"entries": entries, "schema": schema, "meta": {"content_length": 0, "record_count": rows}}
    )
    (work / "manifest").write_text(manifest.to_json())
    _train_model(work / "model.json", rng)
    return {"rows": rows, "parts": len(entries), "manifest": (work / "manifest").as_uri()}


def _train_model(path: Path, rng: np.random.Generator) -> None:
    import xgboost as xgb

    x = rng.standard_normal((50_000, FEATURES), dtype=np.float32)
    logit = x[:, 0] * x[:, 1] + np.sin(x[:, 2] * 2) + (x[:, 3] > 0.5) - x[:, 4] ** 2 / 2
    y = (logit + rng.normal(0, 0.5, len(logit)) > 0).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "tree_method": "hist", "nthread": 2}
    xgb.train(params, xgb.DMatrix(x, y, feature_names=feature_names()), num_boost_round=100).save_model(str(path))


# --- the paths, each in a child process --------------------------------------------------------
def _booster(work: Path) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(work / "model.json"))
    booster.set_param({"nthread": os.cpu_count() or 2})
    return booster


def _matrix(batch: pa.RecordBatch) -> np.ndarray:
    return np.column_stack([batch.column(f).to_numpy(zero_copy_only=False) for f in feature_names()])


def _prediction_batch(keys: pa.Array, scores: np.ndarray) -> pa.RecordBatch:
    labels = pa.array(np.where(scores >= 0.5, CLASSES[1], CLASSES[0]))
    return pa.record_batch(
        {
            "entity_key": keys,
            "label": labels,
            "score": pa.array(scores.astype(np.float64)),
            "model_version": pa.repeat(pa.scalar(VERSION), len(keys)),
        }
    )


def _tsv(pred: pa.RecordBatch, ds: str = DS) -> pa.Buffer:
    from mlbatch.backends.appdb.tsv import tsv_chunk

    day = pa.repeat(pa.scalar(ds), pred.num_rows)
    cols = [pred.column("entity_key"), day, pred.column("model_version"), pred.column("label"), pred.column("score")]
    return tsv_chunk(cols)


def _fresh_table(db_url: str, name: str, *, drop: bool = True) -> Any:
    """The model's tables, dropped first (an empty day) unless ``drop`` is False (a steady one)."""
    from mlbatch import names
    from mlbatch.backends.appdb import schema
    from mlbatch.backends.appdb.hook import AppDbHook
    from sqlalchemy import text

    db = AppDbHook(db_url)
    if not drop:
        return db, schema.predictions_table(name, "integer")
    with db.begin() as conn:
        dropped = (names.predictions_table(name), names.history_table(name), names.base_table(name))
        conn.execute(text("DROP TABLE IF EXISTS " + ", ".join(f"`{t}`" for t in dropped)))
        log = names.PUBLISH_LOG_TABLE
        conn.execute(text(f"DELETE FROM {log}") if db.has_table(log) else text("SELECT 1"))
    db.ensure_schema([(name, "integer")])
    return db, schema.predictions_table(name, "integer")


def _log_row(rows: int, digest: str, ds: str = DS) -> dict[str, Any]:
    return {
        "model": MODEL,
        "ds": date.fromisoformat(ds),
        "model_version": VERSION,
        "rows_published": rows,
        "checksum": digest,
        "run_id": "bench",
        "published_at": datetime(2026, 11, 22, 6, 0),
    }


def footer_splits(manifest: Any, sessions: int) -> list[Any]:
    """``sessions - 1`` split keys of about equal row counts, from the parts' row-group statistics
    of ``entity_key`` (min, max, rows): no pass over the rows. Row groups whose key ranges
    overlap (a scrambled unload) still give disjoint ranges, only less even ones; without
    statistics, one range."""
    from mlbatch.backends.store import filesystem_for

    groups: list[tuple[Any, int]] = []
    for entry in manifest.entries:
        fs, path = filesystem_for(entry.url)
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        col = meta.schema.names.index("entity_key")
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max:
                return []
            groups.append((stats.min, meta.row_group(rg).num_rows))
    if sessions <= 1 or not groups:
        return []
    groups.sort()
    total, seen, splits = sum(n for _, n in groups), 0, []
    for low, n in groups:
        if seen >= total * (len(splits) + 1) / sessions and len(splits) < sessions - 1:
            splits.append(low)
        seen += n
    return sorted(set(splits))
