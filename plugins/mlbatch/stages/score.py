"""Score stage: fix the production model for the run, score each shard in a job, gate the result.

The model version is read once, at the start of the run, and recorded; every shard uses that
version even if a training run promotes another one meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.backends.launchers import JobId, JobRequest
from mlbatch.backends.store import iter_parquet
from mlbatch.features.reader import read_manifest
from mlbatch.maths import drift, gates
from mlbatch.maths.drift import SCORE_BINS
from mlbatch.maths.key_sample import KeySampler
from mlbatch.maths.keycount import repeated_detail, repeated_keys
from mlbatch.maths.prediction_stats import DayStats, PredictionStats
from mlbatch.spec.runparams import MODEL_VERSION
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.external import LaunchedJob

log = logging.getLogger(__name__)


def resolve_model(ctx: RunContext) -> dict[str, Any]:
    key = ctx.state_key("model")
    if ctx.env.store.exists(key):  # a retry keeps the version the run started with
        kept: dict[str, Any] = ctx.env.store.get_json(key)
        return kept
    requested = MODEL_VERSION.get(ctx.params)
    mv = _requested_version(ctx, requested) if requested else registry.production(ctx.env.appdb, ctx.model)
    if mv is None:
        raise LookupError(
            f"{ctx.model} has no production model: run the {ctx.model}__train DAG (or "
            f"`mlbatch run {ctx.model} --ds {ctx.ds} --stage train`) until a version passes its gate"
        )
    state = {"version": mv.version, "artifact_uri": mv.artifact_uri, ctx.spec.train.gate.metric: mv.value}
    ctx.save_state("model", state)
    return state


def _requested_version(ctx: RunContext, version: str) -> registry.ModelVersion:
    """The version named by the run's ``model_version`` param; a clear error if it is not registered."""
    db = ctx.env.appdb
    found = None
    if db.has_table(registry.t.name):
        with db.connect() as conn:
            found = registry.get(conn, ctx.model, version)
    if found is None:
        known = registry.versions(db, ctx.model)[-10:] if db.has_table(registry.t.name) else []
        listed = ", ".join(f"{v.version} ({v.status})" for v in reversed(known)) or "none"
        raise LookupError(
            f"params.model_version {version!r}: {ctx.model} has no such registered version; latest registered: {listed}"
        )
    if found.status != "production":
        status = found.status
        log.warning("%s %s: scoring with %s version %s (params.model_version)", ctx.model, ctx.ds, status, version)
    return found


class ScoreShard(LaunchedJob):
    """The scoring job of one shard of the run's scoring unload, with the run's model version."""

    def __init__(self, ctx: RunContext, shard: int):
        super().__init__(ctx)
        self.shard = shard
        self.out = ctx.env.store.uri(ctx.shard_key(shard))
        self.request = _score_request(ctx, shard, self.out)

    def done(self, reused: bool) -> dict[str, Any]:
        return {"shard": self.shard, "uri": self.out, "reused": reused}


def _score_request(ctx: RunContext, shard: int, out: str) -> JobRequest:
    model = ctx.load_state("model", "resolve the production model first")
    store, shards = ctx.env.store, ctx.spec.score.shards
    return JobRequest(
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
        gpu=ctx.spec.score.resources.gpu,
        vcpu=ctx.spec.score.resources.vcpu,
        memory_gib=ctx.spec.score.resources.memory_gib,
        side_by_side=shards,  # the mapped task runs every shard at once
        model=ctx.model,
    )


def shard_uris(ctx: RunContext) -> list[str]:
    return [ctx.env.store.uri(ctx.shard_key(i)) for i in range(ctx.spec.score.shards)]


# --- prediction gate ---------------------------------------------------------------------------
# The gate streams the shards once (record batches, a row group at a time: memory is a group, not a
# day). Key uniqueness needs every key at once: mlbatch.maths.keycount counts repeats in DuckDB under
# a memory limit (spilling past it), instead of a Python set that grows with the day.
GATE_BATCH_ROWS = 65_536
PROFILE_STATE = "prediction_profile"  # runs/<model>/<ds>/<run>/prediction_profile.json
SUMMARY_STATE = "prediction_summary"  # the day's figures for summary.json, from the gate's pass


def iter_predictions(
    ctx: RunContext, columns: list[str] | None = None, batch_rows: int = GATE_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """This run's predictions, every shard in order, as record batches (never a whole shard)."""
    return iter_parquet(shard_uris(ctx), columns, batch_rows, what="predictions shard")


def class_share_shift(expected: dict[str, int], actual: dict[str, int]) -> tuple[float, str]:
    """The largest change of one class's share of predictions, and that class."""
    te, ta = max(sum(expected.values()), 1), max(sum(actual.values()), 1)
    shifts = {c: abs(actual.get(c, 0) / ta - expected.get(c, 0) / te) for c in set(expected) | set(actual)}
    worst = max(sorted(shifts), key=lambda c: shifts[c])
    return shifts[worst], worst


def _baseline(ctx: RunContext) -> tuple[str | None, dict[str, Any] | None, str]:
    """The last published day before this one, its profile (if stored), and a sentence on it.

    The publish log (written atomically with the predictions) says which day and which run was
    published; that run's gate stored the profile. So a day that was gated but never published,
    or a rerun of this same day, is never the baseline.
    """
    db = ctx.env.appdb
    if not db.has_table(schema.publish_log.name):
        return None, None, f"first published day for {ctx.model}: no earlier day to compare"
    t = schema.publish_log
    with db.connect() as conn:
        row = conn.execute(
            select(t.c.ds, t.c.run_id)
            .where(t.c.model == ctx.model, t.c.ds < date.fromisoformat(ctx.ds))
            .order_by(t.c.ds.desc())
            .limit(1)
        ).first()
    if row is None:
        return None, None, f"first published day for {ctx.model}: no earlier day to compare"
    prev = RunContext(ctx.env, ctx.spec, row.ds.isoformat(), row.run_id)
    key = prev.state_key(PROFILE_STATE)
    if not ctx.env.store.exists(key):
        return (
            prev.ds,
            None,
            f"last published day {prev.ds} has no stored profile ({ctx.env.store.uri(key)}): nothing to compare",
        )
    return prev.ds, ctx.env.store.get_json(key), f"against {prev.ds} (run {row.run_id})"


def _drift_checks(ctx: RunContext, stats: PredictionStats) -> list[gates.Check]:
    limits = ctx.spec.publish
    psi_limit, share_limit = f"<= {limits.max_psi:g}", f"<= {limits.max_class_share_shift:g}"
    prev_ds, prev, detail = _baseline(ctx)
    if prev is None or stats.rows == 0 or prev.get("score_bins") != SCORE_BINS:
        if prev is not None:
            detail = "no rows today" if stats.rows == 0 else f"profile of {prev_ds} uses other bins: nothing to compare"
        return [
            gates.Check("score_psi", True, "n/a", psi_limit, detail),
            gates.Check("class_share_shift", True, "n/a", share_limit, detail),
        ]
    scores = drift.summarize(prev["score_counts"], stats.score_counts)
    shift, worst = class_share_shift(prev["class_counts"], stats.profile()["class_counts"])
    return [
        gates.at_most("score_psi", round(scores.psi, 6), limits.max_psi, f"{SCORE_BINS} score bins {detail}"),
        gates.at_most("class_share_shift", round(shift, 6), limits.max_class_share_shift, f"class {worst!r} {detail}"),
    ]


def predictions_gate(ctx: RunContext) -> dict[str, Any]:
    """Check the day's predictions before anything is written; on success store their profile."""
    store, spec = ctx.env.store, ctx.spec
    model = ctx.load_state("model", "resolve the production model first")
    expected = read_manifest(store, store.uri(ctx.manifest_key("score"))).record_count
    stats, sampler = DayStats(), KeySampler(expected)

    def seen(batch: pa.RecordBatch) -> None:
        stats.update(batch)
        sampler.update(batch.column("entity_key"))

    # One pass: the statistics (those summary.json shows too) and the publish's key sample ride
    # along the key stream that the duplicate count pulls.
    duplicates, examples = repeated_keys(iter_predictions(ctx), "entity_key", seen)
    labels = sorted(map(str, stats.class_counts))
    versions = sorted(map(str, stats.versions))
    checks = [
        gates.equal("rows_equal_scoring_input", stats.rows, expected, "scoring manifest record_count"),
        gates.equal("null_keys", stats.null_keys, 0),
        gates.equal("null_scores", stats.null_scores, 0),
        gates.Check(
            "scores_in_range",
            stats.rows > 0 and stats.out_of_range == 0,
            f"{stats.out_of_range:,} outside, min {stats.lo}, max {stats.hi}",
            "every score within [0, 1] (NaN counts as outside)",
        ),
        gates.equal("duplicate_keys", duplicates, 0, repeated_detail("entity_key", examples)),
        gates.Check(
            "labels_in_classes", set(labels) <= set(spec.labels.classes), labels, f"subset of {spec.labels.classes}"
        ),
        gates.equal("model_version", versions, [model["version"]], "every shard used the run's model"),
        *_drift_checks(ctx, stats),
    ]
    summary = gates.evaluate(f"{ctx.model}.predictions", checks)
    ctx.save_state(PROFILE_STATE, stats.profile())
    ctx.save_state(SUMMARY_STATE, stats.summary())
    _keep_key_sample(ctx, sampler.sample())
    return {"rows": stats.rows, "passed": summary["passed"], "model_version": model["version"]}


def _keep_key_sample(ctx: RunContext, sample: pa.Array | None) -> None:
    """The day's key sample beside the run's state, for the publish's key ranges."""
    if sample is None:
        return
    with ctx.env.store.open_output(names.key_sample_key(ctx.model, ctx.ds, ctx.run_key)) as sink:
        pq.write_table(pa.table({"entity_key": sample}), sink)


def kept_key_sample(ctx: RunContext) -> pa.Array | None:
    """The key sample the prediction gate kept for this run (None: it kept none)."""
    store, key = ctx.env.store, names.key_sample_key(ctx.model, ctx.ds, ctx.run_key)
    if not store.exists(key):
        return None
    return pq.read_table(pa.BufferReader(store.get_bytes(key))).column("entity_key").combine_chunks()
