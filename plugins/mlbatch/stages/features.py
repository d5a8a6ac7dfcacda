"""Features stage: the model's warehouse query, unloaded to parquet parts + manifest, then gated.

Each run unloads into its own prefix. The manifest is written last and is the only thing
readers trust: a prefix without one is a failed attempt, cleared and written again on retry.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlbatch import gates
from mlbatch.features.reader import iter_batches, read_manifest
from mlbatch.features.sql import render_spec_query
from mlbatch.stages.context import Purpose, RunContext

log = logging.getLogger(__name__)

QUERY_STAGE = {"train": "training", "score": "scoring"}


def unload(ctx: RunContext, purpose: Purpose) -> dict[str, Any]:
    store = ctx.env.store
    prefix, manifest_key = ctx.unload_prefix(purpose), ctx.manifest_key(purpose)
    if store.exists(manifest_key):
        manifest = read_manifest(store, store.uri(manifest_key))
        log.info("%s: already unloaded by this run (%d rows); not unloading again", prefix, manifest.record_count)
    else:
        store.delete_prefix(prefix)  # a failed attempt's parts are never read: start clean
        query = render_spec_query(ctx.spec, QUERY_STAGE[purpose], ctx.ds)
        uri = ctx.env.warehouse.unload(query, store, prefix)
        manifest = read_manifest(store, uri)
    return {
        "manifest_uri": store.uri(manifest_key),
        "rows": manifest.record_count,
        "parts": len(manifest.entries),
        "columns": len(manifest.columns),
    }


def profile(manifest_uri: str, key: str) -> dict[str, Any]:
    """One streaming pass: rows, nulls per column, and the key column for a uniqueness check."""
    rows, nulls, keys = 0, {}, []
    for batch in iter_batches(manifest_uri):
        rows += batch.num_rows
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            nulls[name] = nulls.get(name, 0) + col.null_count
        keys.append(batch.column(key))
    key_col = pa.chunked_array(keys) if keys else pa.chunked_array([], pa.int64())
    distinct = len(pc.unique(key_col)) if rows else 0
    return {"rows": rows, "nulls": nulls, "distinct_keys": distinct, "null_keys": key_col.null_count}


def features_gate(ctx: RunContext, purpose: Purpose) -> dict[str, Any]:
    spec, store = ctx.spec, ctx.env.store
    manifest_uri = store.uri(ctx.manifest_key(purpose))
    manifest = read_manifest(store, manifest_uri)
    key = spec.entity.key
    if key not in manifest.columns:
        raise gates.GateFailed(
            f"{ctx.model}.features.{purpose}",
            [gates.Check("key_column", False, manifest.columns, f"contains {key!r}", manifest_uri)],
        )
    p = profile(manifest_uri, key)
    checks = [
        gates.at_least("rows", p["rows"], spec.features.checks.min_rows, manifest_uri),
        gates.equal("rows_match_manifest", p["rows"], manifest.record_count),
        gates.equal("null_keys", p["null_keys"], 0, key),
        gates.equal("duplicate_keys", p["rows"] - p["distinct_keys"], 0, key),
    ]
    limit = spec.features.checks.max_null_fraction
    for name in manifest.columns:
        fraction = p["nulls"].get(name, 0) / p["rows"] if p["rows"] else 0.0
        checks.append(gates.at_most(f"null_fraction[{name}]", fraction, limit))
    if purpose == "score":
        checks.append(_schema_check(ctx, manifest.columns))
    summary = gates.evaluate(f"{ctx.model}.features.{purpose}", checks)
    return {"rows": p["rows"], "passed": summary["passed"]}


def _schema_check(ctx: RunContext, columns: list[str]) -> gates.Check:
    """Scoring rows must carry exactly the features the production model was trained on."""
    model = ctx.load_state("model", "the score DAG resolves the production model first")
    schema = ctx.env.store.get_json(ctx.env.store.key(model["artifact_uri"]) + "feature_schema.json")
    expected = [ctx.spec.entity.key] + [c["name"] for c in schema]
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    detail = f"missing {missing}, unexpected {extra}" if missing or extra else "same columns"
    return gates.Check(
        "feature_schema",
        not missing and not extra,
        f"{len(columns)} columns",
        "the model's feature_schema.json",
        detail,
    )
