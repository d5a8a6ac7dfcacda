"""A scored day's statistics, accumulated batch by batch in constant memory: what the prediction
gate checks (:class:`PredictionStats`) and what ``summary.json`` shows besides (:class:`DayStats`:
the mean and the quantiles). One accumulation serves both, so they cannot disagree."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlbatch.maths import drift
from mlbatch.maths.drift import SCORE_BINS


@dataclass
class PredictionStats:
    """What the gate needs from a day's predictions, accumulated batch by batch."""

    rows: int = 0
    null_keys: int = 0
    null_scores: int = 0
    out_of_range: int = 0
    lo: float | None = None
    hi: float | None = None
    score_counts: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    class_counts: Counter[object] = field(default_factory=Counter)  # predicted label -> rows
    versions: set[object] = field(default_factory=set)  # model_version values seen

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.null_keys += batch.column("entity_key").null_count
        scores = batch.column("score")
        self.null_scores += scores.null_count
        values = np.asarray(scores.drop_null().cast(pa.float64()))
        valid = values[(values >= 0.0) & (values <= 1.0)]  # NaN fails both comparisons
        self.out_of_range += len(values) - len(valid)
        finite = values[~np.isnan(values)]
        if len(finite):
            self.lo = min(self.lo, float(finite.min())) if self.lo is not None else float(finite.min())
            self.hi = max(self.hi, float(finite.max())) if self.hi is not None else float(finite.max())
        for i, n in enumerate(drift.score_histogram(valid)):
            self.score_counts[i] += int(n)
        for item in pc.value_counts(batch.column("label")).to_pylist():
            self.class_counts[item["values"]] += item["counts"]
        self.versions.update(pc.unique(batch.column("model_version")).to_pylist())
        self._scores(values)

    def _scores(self, values: np.ndarray) -> None:
        """More of what the batch's non-null scores (float64) say: none here (see :class:`DayStats`)."""

    def profile(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "score_bins": SCORE_BINS,
            "score_counts": self.score_counts,
            "class_counts": {str(k): v for k, v in sorted(self.class_counts.items(), key=lambda kv: str(kv[0]))},
        }


QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_BINS = 10_000  # quantiles from a histogram this fine are exact to 1e-4, in constant memory


@dataclass
class DayStats(PredictionStats):
    """What the gate checks (:class:`PredictionStats`) plus what only ``summary.json`` shows: the
    mean and the quantiles, from a fine histogram in constant memory. The gate accumulates it in
    its one pass over the day and keeps :meth:`summary`, so the summary never reads the day again."""

    total: float = 0.0
    fine: np.ndarray = field(default_factory=lambda: np.zeros(QUANTILE_BINS, dtype=np.int64))

    def _scores(self, values: np.ndarray) -> None:
        self.total += float(values[np.isfinite(values)].sum())
        self.fine += drift.score_histogram(values, QUANTILE_BINS)

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

    def summary(self) -> dict[str, Any]:
        """The day's figures as ``summary.json`` shows them (rows, labels, versions, scores)."""
        return {
            "model_version": sorted(map(str, self.versions)),
            "rows": self.rows,
            "labels": {str(k): v for k, v in sorted(self.class_counts.items(), key=lambda kv: str(kv[0]))},
            "score": {
                "min": self.lo,
                "max": self.hi,
                "mean": self.total / self.rows if self.rows else None,
                "quantiles": {f"p{round(q * 100):02d}": self.quantile(q) for q in QUANTILES},
                "quantile_resolution": 1 / QUANTILE_BINS,
                "histogram_bins": [round(i / drift.SCORE_BINS, 2) for i in range(drift.SCORE_BINS + 1)],
                "histogram": list(self.score_counts),
            },
        }
