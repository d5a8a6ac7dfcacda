"""Score stage: fix the production model for the run, score each shard in a job, gate the result.

The model version is read once, at the start of the run, and recorded; every shard uses that
version even if a training run promotes another one meanwhile.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlbatch import gates, registry
from mlbatch.features.reader import read_manifest
from mlbatch.launchers import JobId, JobRequest
from mlbatch.stages.context import RunContext


def resolve_model(ctx: RunContext) -> dict[str, Any]:
    key = ctx.state_key("model")
    if ctx.env.store.exists(key):  # a retry keeps the version the run started with
        return ctx.env.store.get_json(key)
    mv = registry.production(ctx.env.appdb, ctx.model)
    if mv is None:
        raise LookupError(
            f"{ctx.model} has no production model: run the {ctx.model}__train DAG (or "
            f"`mlbatch run {ctx.model} --ds {ctx.ds} --stage train`) until a version passes its gate"
        )
    state = {"version": mv.version, "artifact_uri": mv.artifact_uri, ctx.spec.train.gate.metric: mv.value}
    ctx.save_state("model", state)
    return state


def score_shard(ctx: RunContext, shard: int) -> dict[str, Any]:
    model = ctx.load_state("model", "resolve the production model first")
    store, shards = ctx.env.store, ctx.spec.score.shards
    out = store.uri(ctx.shard_key(shard))
    request = JobRequest(
        job_id=JobId(ctx.dag_id or f"{ctx.model}__score", "score", ctx.run_id, shard),
        module="jobs.score",
        args=[
            "--model",
            model["artifact_uri"],
            "--features",
            store.uri(ctx.manifest_key("score")),
            "--output",
            out,
            "--ds",
            ctx.ds,
            "--model-version",
            model["version"],
            "--shard",
            str(shard),
            "--shards",
            str(shards),
        ],
        success_uri=out + "._SUCCESS",
    )
    result = ctx.env.launcher.run(request)
    return {"shard": shard, "uri": out, "reused": result.reused}


def shard_uris(ctx: RunContext) -> list[str]:
    return [ctx.env.store.uri(ctx.shard_key(i)) for i in range(ctx.spec.score.shards)]


def read_predictions(ctx: RunContext, columns: list[str] | None = None) -> pa.Table:
    """This run's predictions, all shards (only key, label, score and a few strings per row)."""
    store = ctx.env.store
    tables = [pq.read_table(pa.BufferReader(store.get_bytes(store.key(u))), columns=columns) for u in shard_uris(ctx)]
    return pa.concat_tables(tables)


def predictions_gate(ctx: RunContext) -> dict[str, Any]:
    store, spec = ctx.env.store, ctx.spec
    model = ctx.load_state("model", "resolve the production model first")
    expected = read_manifest(store, store.uri(ctx.manifest_key("score"))).record_count
    t = read_predictions(ctx)
    rows = t.num_rows
    scores = t["score"]
    labels = pc.unique(t["label"]).to_pylist()
    lo = pc.min(scores).as_py() if rows else None
    hi = pc.max(scores).as_py() if rows else None
    versions = pc.unique(t["model_version"]).to_pylist()
    checks = [
        gates.equal("rows_equal_scoring_input", rows, expected, "scoring manifest record_count"),
        gates.equal("null_keys", t["entity_key"].null_count, 0),
        gates.equal("null_scores", scores.null_count, 0),
        gates.equal("duplicate_keys", rows - len(pc.unique(t["entity_key"])), 0),
        gates.Check("scores_in_range", rows > 0 and lo >= 0.0 and hi <= 1.0, f"[{lo}, {hi}]", "within [0, 1]"),
        gates.Check(
            "labels_in_classes",
            set(labels) <= set(spec.labels.classes),
            sorted(map(str, labels)),
            f"subset of {spec.labels.classes}",
        ),
        gates.equal("model_version", versions, [model["version"]], "every shard used the run's model"),
    ]
    summary = gates.evaluate(f"{ctx.model}.predictions", checks)
    return {"rows": rows, "passed": summary["passed"], "model_version": model["version"]}
