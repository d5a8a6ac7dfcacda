"""A scored day's ``predictions/<model>/<ds>/summary.json`` (:func:`mlbatch.names.summary_key`),
written after the publish: rows, counts per label, the score distribution (min, max, mean,
quantiles, a 10-bin histogram) and its drift against the latest earlier day that has a summary,
computed by :mod:`mlbatch.maths.drift` as the prediction gate computes it; and each feature's PSI against
the training data, as the features gate computed it. The day's figures are the prediction gate's
(it keeps them in its one pass over the day): the summary does not read the day again.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from mlbatch import names
from mlbatch.maths import drift
from mlbatch.maths.prediction_stats import DayStats
from mlbatch.reporting import costs
from mlbatch.stages.context import RunContext
from mlbatch.stages.features import FEATURE_DRIFT_STATE
from mlbatch.stages.score import SUMMARY_STATE, iter_predictions

DRIFT_LOOKBACK_DAYS = 7


def _drift(ctx: RunContext, histogram: list[int], mean: float) -> dict[str, Any] | None:
    store, day = ctx.env.store, date.fromisoformat(ctx.ds)
    for back in range(1, DRIFT_LOOKBACK_DAYS + 1):
        ref_ds = (day - timedelta(days=back)).isoformat()
        key = names.summary_key(ctx.model, ref_ds)
        if store.exists(key):
            ref = store.get_json(key)
            # The prediction gate's own comparison (mlbatch.maths.drift), so the figure here is the
            # one the gate checked against publish.max_psi for the same two histograms.
            scores = drift.summarize(ref["score"]["histogram"], histogram)
            return {
                "reference_ds": ref_ds,
                "score_psi": scores.as_dict()["psi"],
                "level": scores.level,
                "mean_shift": round(mean - ref["score"]["mean"], 6),
            }
    return None


def _feature_drift(ctx: RunContext) -> dict[str, Any] | None:
    """The features gate's PSI per feature against the training data (None when it had no profile)."""
    return ctx.kept_state(FEATURE_DRIFT_STATE)


def _day_stats(ctx: RunContext) -> dict[str, Any]:
    """The day's figures as the prediction gate kept them in its pass over the day; a run gated
    before the gate kept them (an older mlbatch) reads its predictions once more instead."""
    kept = ctx.kept_state(SUMMARY_STATE)
    if kept is not None:
        return kept
    stats = DayStats()
    for batch in iter_predictions(ctx, ["entity_key", "label", "score", "model_version"]):
        stats.update(batch)
    return stats.summary()


def scoring_summary(ctx: RunContext) -> str:
    """Write the day's ``summary.json`` from this run's predictions' figures; returns its URI."""
    day = _day_stats(ctx)
    summary = {
        "model": ctx.model,
        "ds": ctx.ds,
        "run_id": ctx.run_id,
        **day,
        "drift": _drift(ctx, day["score"]["histogram"], day["score"]["mean"]) if day["rows"] else None,
        "feature_drift": _feature_drift(ctx),
        # What the run used (mlbatch.reporting.costs): written after the publish, so its rows count.
        "cost": costs.record(ctx, "score"),
    }
    return ctx.env.store.put_json(names.summary_key(ctx.model, ctx.ds), summary)
