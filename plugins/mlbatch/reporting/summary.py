"""A scored day's ``predictions/<model>/<ds>/summary.json`` (:func:`mlbatch.names.summary_key`),
written after the publish: rows, counts per label, the score distribution (min, max, mean,
quantiles, a 10-bin histogram) and its drift against the latest earlier day that has a summary,
computed by :mod:`mlbatch.maths.drift` as the prediction gate computes it; and each feature's PSI against
the training data, as the features gate computed it. The day streams batch by batch like the gate
and the publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from mlbatch import names
from mlbatch.maths import drift
from mlbatch.reporting import costs
from mlbatch.stages.context import RunContext
from mlbatch.stages.features import FEATURE_DRIFT_STATE
from mlbatch.stages.score import PredictionStats, iter_predictions

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
    key = ctx.state_key(FEATURE_DRIFT_STATE)
    return ctx.env.store.get_json(key) if ctx.env.store.exists(key) else None


QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_BINS = 10_000  # quantiles from a histogram this fine are exact to 1e-4, in constant memory


@dataclass
class _ScoreSummary(PredictionStats):
    """The prediction gate's statistics of the day (rows, min, max, the 10-bin histogram, label
    counts, versions: one accumulation, so the summary and the gate cannot disagree) plus what
    only summary.json shows: the mean and the quantiles, from a fine histogram in constant memory."""

    total: float = 0.0
    fine: np.ndarray = field(default_factory=lambda: np.zeros(QUANTILE_BINS, dtype=np.int64))

    def update(self, batch: pa.RecordBatch) -> None:
        super().update(batch)
        scores = np.asarray(batch.column("score").drop_null().cast(pa.float64()))
        self.total += float(scores[np.isfinite(scores)].sum())
        self.fine += drift.score_histogram(scores, QUANTILE_BINS)

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the scores in [0, 1], interpolated between two order statistics as
        numpy's default does, each placed within its fine bin (the bin's rows spread evenly)."""
        n = int(self.fine.sum())
        if not n:
            return None
        cumulative = np.cumsum(self.fine)

        def order_statistic(k: int) -> float:
            i = int(np.searchsorted(cumulative, k, side="right"))
            before = int(cumulative[i - 1]) if i else 0
            return (i + (k - before + 0.5) / float(self.fine[i])) / QUANTILE_BINS

        rank = q * (n - 1)
        low, frac = int(rank), rank - int(rank)
        value = order_statistic(low) + frac * (order_statistic(min(low + 1, n - 1)) - order_statistic(low))
        return round(value, 6)


def scoring_summary(ctx: RunContext) -> str:
    """Write the day's ``summary.json`` from this run's predictions; returns its URI."""

    acc = _ScoreSummary()
    for batch in iter_predictions(ctx, ["entity_key", "label", "score", "model_version"]):
        acc.update(batch)
    rows = acc.rows
    mean = acc.total / rows if rows else None
    histogram = list(acc.score_counts)
    summary = {
        "model": ctx.model,
        "ds": ctx.ds,
        "run_id": ctx.run_id,
        "model_version": sorted(map(str, acc.versions)),
        "rows": rows,
        "labels": {str(k): v for k, v in sorted(acc.class_counts.items(), key=lambda kv: str(kv[0]))},
        "score": {
            "min": acc.lo,
            "max": acc.hi,
            "mean": mean,
            "quantiles": {f"p{round(q * 100):02d}": acc.quantile(q) for q in QUANTILES},
            "quantile_resolution": 1 / QUANTILE_BINS,
            "histogram_bins": [round(i / drift.SCORE_BINS, 2) for i in range(drift.SCORE_BINS + 1)],
            "histogram": histogram,
        },
        "drift": _drift(ctx, histogram, mean) if mean is not None else None,  # None: no rows
        "feature_drift": _feature_drift(ctx),
        # What the run used (mlbatch.reporting.costs): written after the publish, so its rows count.
        "cost": costs.record(ctx, "score"),
    }
    return ctx.env.store.put_json(names.summary_key(ctx.model, ctx.ds), summary)
