"""Scoring throughput per core of each model family, on the demo's synthetic data.

    python benchmarks/bench_jobs.py [--rows 500000] [--train-rows 20000] [--json]

For each family (xgboost, torch_mlp on the device_gender features; torch_text on recipe titles)
it trains a small model in-process, then pins the process to ONE core (sched_setaffinity, which
is what the families read to size their thread pools) and measures:

- ``predict``: the family's ``predict_proba`` on 131,072-row record batches (encoding included:
  categorical codes, standardising, tokenising and hashing), best of 3 passes;
- ``score_job``: :func:`jobs.score.score` end to end (parquet read, predict, parquet write) on
  the same rows written as a 4-part unload.

Numbers are rows per second on one core; multiply by the container's cores for a shard's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

BATCH = 131_072


def device_features(n: int) -> tuple[pa.Table, np.ndarray]:
    from devtools import synth

    cols, female = synth._features(np.random.default_rng(3), n, date(2026, 11, 22))
    cols = {k: v for k, v in cols.items() if k not in ("first_seen", "last_seen")}
    return pa.table(cols), female.astype(np.int64)


def recipe_features(n: int) -> tuple[pa.Table, np.ndarray]:
    from devtools import synth

    recipes, truth = synth._recipes(np.random.default_rng(3), n, date(2026, 11, 22))
    table = recipes.select(["recipe_id", "title", "n_ingredients", "prep_minutes", "calories"])
    y = np.array([synth.RECIPE_CLASSES.index(c) for c in truth.column("category").to_pylist()])
    return table, y


CASES = {
    "xgboost": (device_features, "device_id", ["female", "male"], {"n_estimators": 300, "max_depth": 6}),
    "torch_mlp": (device_features, "device_id", ["female", "male"], {"max_epochs": 5}),
    "torch_text": (recipe_features, "recipe_id", ["main", "side", "dessert", "drink", "other"], {"max_epochs": 5}),
}


def write_unload(table: pa.Table, directory: Path, parts: int = 4) -> str:
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    entries = []
    for i in range(parts):
        path = directory / f"{i:04d}_part_00.parquet"
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), path)
        entries.append({"url": path.as_uri(), "meta": {"record_count": int(bounds[i + 1] - bounds[i])}})
    manifest = {"entries": entries, "meta": {"record_count": table.num_rows}}
    (directory / "manifest").write_text(json.dumps(manifest))
    return (directory / "manifest").as_uri()


def bench(name: str, rows: int, train_rows: int) -> dict[str, object]:
    from jobs import io, score
    from jobs.families import get_family

    make, key, classes, params = CASES[name]
    table, y = make(max(rows, train_rows))
    x = table.drop_columns([key])
    n_tr = int(train_rows * 0.8)
    family = get_family(name)
    started = time.monotonic()
    model = family.fit(
        x.slice(0, n_tr),
        y[:n_tr],
        x.slice(n_tr, train_rows - n_tr),
        y[n_tr:train_rows],
        classes=classes,
        params=params,
        seed=7,
        metric="accuracy",
    )
    fit_s = time.monotonic() - started
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        meta = {**model.save(out.as_uri()), "family": name, "entity_key": key, "entity_key_type": "int64"}
        io.write_json(io.join_uri(out.as_uri(), "model_meta.json"), meta)
        io.write_json(
            io.join_uri(out.as_uri(), "feature_schema.json"), [{"name": f.name, "type": str(f.type)} for f in x.schema]
        )
        scored = table.slice(0, rows)
        manifest = write_unload(scored, Path(tmp))

        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core from here on
        loaded = family.load(out.as_uri(), meta)
        batches = scored.drop_columns([key]).to_batches(max_chunksize=BATCH)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for b in batches:
                loaded.predict_proba(b)
            best = min(best, time.perf_counter() - t0)
        summary = score.score(
            out.as_uri(), manifest, (Path(tmp) / "pred.parquet").as_uri(), "2026-11-22", "v", 0, 1, BATCH
        )
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {
        "family": name,
        "rows": rows,
        "fit_seconds": round(fit_s, 1),
        "predict_rows_per_s_per_core": round(rows / best),
        "score_job_rows_per_s_per_core": summary["rows_per_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--train-rows", type=int, default=20_000)
    p.add_argument("--families", nargs="*", default=list(CASES))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("MLBATCH_XGB_DEVICE", "cpu")
    results = [bench(f, args.rows, args.train_rows) for f in args.families]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'family':<12} {'rows':>9} {'fit s':>7} {'predict rows/s/core':>20} {'score job rows/s/core':>22}")
    for r in results:
        print(
            f"{r['family']:<12} {r['rows']:>9,} {r['fit_seconds']:>7} {r['predict_rows_per_s_per_core']:>20,} "
            f"{r['score_job_rows_per_s_per_core']:>22,}"
        )


if __name__ == "__main__":
    main()
