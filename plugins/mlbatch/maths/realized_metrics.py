"""Metrics of published predictions against late labels, with confidence intervals, in numpy.

The train job measures with scikit-learn (``jobs/metrics.py``); the Airflow image has no
scikit-learn, so the realized-performance stage measures here, with the same definitions:

* ``roc_auc``: the rank (Mann-Whitney) formula, ties counted half; interval by DeLong's
  variance (DeLong, DeLong & Clarke-Pearson 1988, in the O(n log n) form of Sun & Xu 2014).
* ``accuracy``: share of correct predicted labels; Wilson score interval.
* ``pr_auc`` (average precision, as scikit-learn), ``f1``, ``macro_f1``, ``log_loss``:
  a percentile bootstrap (fixed seed, so a rerun records the same interval).

What the predictions table holds decides what can be measured: binary rows carry
P(classes[1]) in ``score``, so every binary metric can; multiclass rows carry only the
predicted class's probability, so ``log_loss`` cannot (:func:`measurable` says which).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 %
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 20261203
EPS = 1e-15  # log loss clips probabilities as scikit-learn does


@dataclass(frozen=True)
class Measured:
    metric: str
    value: float | None  # None: undefined on these rows (e.g. AUC with one class present)
    n: int
    ci_low: float | None
    ci_high: float | None


def measurable(metric: str, binary: bool) -> bool:
    if binary:
        return metric in ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss")
    return metric in ("accuracy", "macro_f1")


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Boundaries of runs of equal values; each run gets the mean of its positions.
    starts = np.r_[0, np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties half."""
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    if not m or not n:
        return None
    ranks = _midranks(np.concatenate([pos, neg]))
    return float((ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n))


def delong(y: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """(AUC, variance of its estimate) by DeLong's structural components."""
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return None
    all_ranks = _midranks(np.concatenate([pos, neg]))
    pos_ranks, neg_ranks = _midranks(pos), _midranks(neg)
    auc = (all_ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (all_ranks[:m] - pos_ranks) / n  # per positive: share of negatives it beats
    v01 = 1.0 - (all_ranks[m:] - neg_ranks) / m  # per negative: share of positives that beat it
    var = np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n
    return float(auc), float(var)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """scikit-learn's average_precision_score: sum over thresholds of ΔR · P."""
    npos = int(y.sum())
    if npos == 0:
        return None
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(ps[1:] != ps[:-1]), len(ps) - 1]  # end of each tied block
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = int(np.sum((pred == 1) & (y == 1)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over every class (a class absent from both scores 0, as scikit-learn's default)."""
    return float(np.mean([f1((y == c).astype(np.int8), (pred == c).astype(np.int8)) for c in range(n_classes)]))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _bootstrap(stat: Callable[[np.ndarray], float | None], n: int) -> tuple[float | None, float | None]:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = (stat(rng.integers(0, n, n)) for _ in range(BOOTSTRAP_RESAMPLES))
    values = [v for v in drawn if v is not None]
    if len(values) < BOOTSTRAP_RESAMPLES // 2:
        return None, None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def measure(metric: str, y: np.ndarray, pred: np.ndarray, score: np.ndarray, n_classes: int) -> Measured:
    """``y`` true class index, ``pred`` predicted class index (into the spec's classes),
    ``score`` P(classes[1]) for a binary model (unused otherwise)."""
    n = len(y)
    if n == 0:
        return Measured(metric, None, 0, None, None)
    if metric == "accuracy":
        correct = int(np.sum(y == pred))
        lo, hi = wilson(correct, n)
        return Measured(metric, correct / n, n, lo, hi)
    if metric == "roc_auc":
        found = delong(y, score)
        if found is None:
            return Measured(metric, roc_auc(y, score), n, None, None)
        auc, var = found
        half = Z95 * math.sqrt(var)
        return Measured(metric, auc, n, max(0.0, auc - half), min(1.0, auc + half))
    stats: dict[str, Callable[[np.ndarray], float | None]] = {  # a metric on the rows at indices i
        "pr_auc": lambda i: average_precision(y[i], score[i]),
        "f1": lambda i: f1(y[i], pred[i]),
        "log_loss": lambda i: log_loss(y[i], score[i]),
        "macro_f1": lambda i: macro_f1(y[i], pred[i], n_classes),
    }
    if metric not in stats:
        raise ValueError(f"realized metric {metric!r} is not one of accuracy, roc_auc, {', '.join(stats)}")
    everything = np.arange(n)
    low, high = _bootstrap(stats[metric], n)
    return Measured(metric, stats[metric](everything), n, low, high)
