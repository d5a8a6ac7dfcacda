"""Drift between two distributions over the same bins: the project's one population stability index.

The feature gate (training profile vs the scoring day, per numeric feature), the prediction gate
(last published day's score histogram vs today's) and the scoring summary report all measure
drift here, so a report can never contradict the gate that decided.

PSI = sum over bins of (a - e) * ln(a / e), where e and a are each side's share of its rows in
the bin. Either side may be given as counts or as shares: each is divided by its own total. An
empty bin's share is floored at :data:`PSI_FLOOR` on both sides (no renormalisation), so one
empty bin gives a large but finite value instead of infinity. A side with no rows at all has no
distribution: PSI is NaN, its level ``"unknown"``, and a gate comparing it with a limit fails.

Levels (the usual reading): below 0.1 stable, below 0.25 moderate, else shifted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PSI_FLOOR = 1e-4  # an empty bin's share: large enough to stay finite, small enough to still count
LEVELS: tuple[tuple[float, str], ...] = ((0.1, "stable"), (0.25, "moderate"), (math.inf, "shifted"))
SCORE_BINS = 10  # fixed, equal-width bins over [0, 1]: histograms of different days stay comparable


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (see the module doc)."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins on both sides, got {len(expected)} and {len(actual)}")
    e, a = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if (e < 0).any() or (a < 0).any():
        raise ValueError(f"PSI needs non-negative counts or shares, got {list(expected)} and {list(actual)}")
    e_total, a_total = e.sum(), a.sum()
    if e_total == 0 or a_total == 0:
        return math.nan
    e = np.maximum(e / e_total, PSI_FLOOR)
    a = np.maximum(a / a_total, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def level(value: float) -> str:
    """``stable``, ``moderate`` or ``shifted`` (:data:`LEVELS`); ``unknown`` for NaN."""
    if math.isnan(value):
        return "unknown"
    return next(name for bound, name in LEVELS if value < bound)


def score_histogram(scores: np.ndarray, bins: int = SCORE_BINS) -> np.ndarray:
    """Counts of scores in ``bins`` equal-width bins over [0, 1] (1.0 in the last bin).

    NaN and scores outside [0, 1] are not counted: the prediction gate reports them apart.
    """
    values = np.asarray(scores, dtype=np.float64)
    valid = values[(values >= 0.0) & (values <= 1.0)]  # NaN fails both comparisons
    idx = np.minimum((valid * bins).astype(np.int64), bins - 1)
    return np.bincount(idx, minlength=bins)


@dataclass(frozen=True)
class Drift:
    """One comparison's outcome, as the gates check it and the reports show it."""

    psi: float
    level: str
    bins: int

    def as_dict(self) -> dict[str, float | str | int | None]:
        """JSON-ready (NaN becomes None: JSON has no NaN), PSI rounded to 6 decimals."""
        return {"psi": None if math.isnan(self.psi) else round(self.psi, 6), "level": self.level, "bins": self.bins}


def summarize(expected: Sequence[float], actual: Sequence[float]) -> Drift:
    """PSI of ``actual`` against ``expected`` and its level."""
    value = psi(expected, actual)
    return Drift(psi=value, level=level(value), bins=len(expected))
