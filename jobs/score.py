"""Score one shard of a day's features with a trained model version.

    python -m jobs.score --model MODEL_PREFIX_URI --features MANIFEST_URI \\
        --output PREDICTIONS_PARQUET_URI --ds YYYY-MM-DD --model-version V [--shard I --shards N]

Shard I of N takes the manifest entries whose index % N == I (a shard may get none: it then
writes an empty parquet with the same schema). Each file is streamed in record batches, so
memory stays bounded by the batch size, not the day's row count. Output columns:
entity_key (the key's own type), label (predicted class), score (float64: binary, the
probability of classes[1]; multiclass, the probability of the predicted class), ds,
model_version. The parquet appears at the output URI only once complete, then
``<output>._SUCCESS`` ({"rows": n, ...}); with that marker present the job exits 0 at once.
Exit codes: 0 done (or already done); 2 bad input (stderr names it); 1 a crash.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import entrypoint, io
from jobs.contract import ConfigError, ModelMeta
from jobs.entrypoint import run_once
from jobs.families.columns import size_thread_pools
from jobs.io import JobInputError


def log(msg: str) -> None:
    entrypoint.log("score", msg)


def check_columns(source: str, schema: pa.Schema, key: str, expected: list[str], model: str) -> None:
    """The file's feature columns must be the model's, in the model's order."""
    names = schema.names
    if key not in names:
        raise JobInputError(f"{source}: no entity key column {key!r}; columns are {names}")
    got = [c for c in names if c != key]
    if got == expected:
        return
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    if missing or extra:
        raise JobInputError(
            f"{source}: feature columns differ from {io.join_uri(model, 'feature_schema.json')}: "
            f"missing {missing}, extra {extra}"
        )
    raise JobInputError(
        f"{source}: feature columns are in a different order than the model's "
        f"({io.join_uri(model, 'feature_schema.json')}): expected {expected}, got {got}"
    )


def key_type_for(manifest: dict[str, Any], meta: ModelMeta) -> pa.DataType:
    """Every shard must write the same schema, even one with no files: take the key's type from
    the manifest's first part (a footer read), else from training."""
    if manifest["entries"]:
        field = io.open_parquet(manifest["entries"][0]["url"]).schema_arrow.field(meta.entity_key)
        t = field.type
        return t.value_type if pa.types.is_dictionary(t) else t
    return pa.type_for_alias(meta.entity_key_type)


def load_meta(model: str) -> ModelMeta:
    """The model's ``model_meta.json``, parsed by the contract the train job writes it with."""
    uri = io.join_uri(model, "model_meta.json")
    try:
        return ModelMeta.parse(io.read_json(uri))
    except ConfigError as exc:
        raise JobInputError(f"{uri}: {exc}") from exc


def score(
    model: str,
    features_uri: str,
    output: str,
    ds: str,
    model_version: str,
    shard: int,
    shards: int,
    batch_size: int,
) -> dict[str, Any]:
    started = time.monotonic()
    threads = size_thread_pools()
    meta = load_meta(model)
    schema = io.read_json(io.join_uri(model, "feature_schema.json"))
    expected = [c["name"] for c in schema]
    key, classes = meta.entity_key, meta.classes

    # The families import xgboost and torch (seconds to import): only the job that fits or scores loads them.
    from jobs.families import get_family

    family = get_family(meta.family).load(model, meta.raw)
    manifest = io.read_manifest(features_uri)
    mine = [e for i, e in enumerate(manifest["entries"]) if i % shards == shard]

    # Check every file of the shard (footers only) before writing a byte.
    files = []
    for entry in mine:
        pf = io.open_parquet(entry["url"])
        io.check_entry_count(entry, pf)
        check_columns(entry["url"], pf.schema_arrow, key, expected, model)
        family.check_schema(pf.schema_arrow, entry["url"])
        files.append((entry, pf))

    out_schema = pa.schema(
        [
            ("entity_key", key_type_for(manifest, meta)),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("ds", pa.string()),
            ("model_version", pa.string()),
        ]
    )
    class_array = pa.array(classes, pa.string())
    rows = 0
    loop_started = time.monotonic()
    with io.open_output(output) as sink, pq.ParquetWriter(sink, out_schema) as writer:
        for entry, pf in files:
            for batch in io.iter_batches(pf, batch_size, [key, *expected]):
                proba = family.predict_proba(batch)
                if len(classes) == 2:
                    s = proba[:, 1]
                    pred = (s >= 0.5).astype(np.int32)
                else:
                    pred = proba.argmax(axis=1).astype(np.int32)
                    s = proba[np.arange(len(pred)), pred]
                n = batch.num_rows
                keys = batch.column(key)
                if keys.type != out_schema.field("entity_key").type:
                    keys = pc.cast(keys, out_schema.field("entity_key").type)
                writer.write_batch(
                    pa.record_batch(
                        [
                            keys,
                            pc.take(class_array, pa.array(pred)),
                            pa.array(s, pa.float64()),
                            pa.repeat(pa.scalar(ds, pa.string()), n),
                            pa.repeat(pa.scalar(model_version, pa.string()), n),
                        ],
                        schema=out_schema,
                    )
                )
                rows += n
            log(f"scored {entry['url']} ({entry['meta']['record_count']} rows)")
    seconds = time.monotonic() - started
    loop_seconds = time.monotonic() - loop_started  # reading + predicting + writing, no start-up
    summary = {
        "status": "scored",
        "rows": rows,
        "files": len(files),
        "shard": shard,
        "shards": shards,
        "threads": threads,
        "seconds": round(seconds, 3),
        "scoring_seconds": round(loop_seconds, 3),
        "rows_per_s": round(rows / loop_seconds) if loop_seconds > 0 else None,
        "output": output,
        "ds": ds,
        "model_version": model_version,
    }
    io.write_json(output + "._SUCCESS", summary)
    return summary


def _ds(value: str) -> str:
    try:
        if len(value) != 10:
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ds must be a date YYYY-MM-DD, got {value!r}") from None
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.score", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model prefix URI (models/<model>/<version>/)")
    p.add_argument("--features", required=True, help="URI of the scoring features' UNLOAD manifest")
    p.add_argument("--output", required=True, help="URI of this shard's predictions parquet")
    p.add_argument("--ds", required=True, type=_ds, help="the day scored, YYYY-MM-DD")
    p.add_argument("--model-version", required=True, help="written into every prediction row")
    p.add_argument("--shard", type=int, default=0, help="this shard's index, 0-based (default 0)")
    p.add_argument("--shards", type=int, default=1, help="number of shards (default 1)")
    p.add_argument("--batch-size", type=int, default=131_072, help="rows per record batch (memory bound)")
    args = p.parse_args(argv)
    if args.shards < 1 or not 0 <= args.shard < args.shards:
        p.error(f"need 0 <= --shard < --shards, got --shard {args.shard} --shards {args.shards}")
    if args.batch_size < 1:
        p.error("--batch-size must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_once(
        "score",
        args.output,
        args.output + "._SUCCESS",
        lambda: score(
            args.model,
            args.features,
            args.output,
            args.ds,
            args.model_version,
            args.shard,
            args.shards,
            args.batch_size,
        ),
        complete="this shard is complete; not rescoring",
    )


if __name__ == "__main__":
    sys.exit(main())
