"""The realized-performance metrics against brute force and textbook values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from mlbatch.maths import realized_metrics as rm


def _pair_count_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _brute_delong_var(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]

    def psi(a: float, b: float) -> float:
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = np.array([np.mean([psi(a, b) for b in neg]) for a in pos])
    v01 = np.array([np.mean([psi(a, b) for a in pos]) for b in neg])
    return float(np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_the_pair_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.6 + y * 0.3, 2)  # rounding makes many ties
    assert rm.roc_auc(y, p) == pytest.approx(_pair_count_auc(y, p), abs=1e-12)
    auc, var = rm.delong(y, p)
    assert auc == pytest.approx(_pair_count_auc(y, p), abs=1e-12)
    assert var == pytest.approx(_brute_delong_var(y, p), rel=1e-9)


def test_auc_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert rm.roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75  # the scikit-learn docs' example
    assert rm.roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert rm.roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert rm.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None  # one class: undefined


def test_auc_interval_covers_and_narrows_with_n() -> None:
    rng = np.random.default_rng(5)

    def draw(n: int) -> rm.Measured:
        y = rng.integers(0, 2, n)
        p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * (y - 0.5))))
        return rm.measure("roc_auc", y, (p >= 0.5).astype(int), p, 2)

    small, large = draw(200), draw(20_000)
    assert small.ci_low < small.value < small.ci_high
    assert large.ci_high - large.ci_low < (small.ci_high - small.ci_low) / 5
    # Binormal model with d' = 1.5: AUC = Phi(1.5 / sqrt(2)) = 0.8556
    true_auc = 0.5 * (1 + math.erf(1.5 / 2))
    assert large.ci_low < true_auc < large.ci_high


def test_wilson_textbook_value() -> None:
    # 81 successes of 263 (Wilson 1927 / Newcombe 1998, example): 0.2553 .. 0.3662
    lo, hi = rm.wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    assert rm.wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and rm.wilson(10, 10)[1] == pytest.approx(1.0)


def test_accuracy_macro_f1_and_average_precision() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    pred = np.array([0, 2, 2, 2, 1, 0, 1])
    acc = rm.measure("accuracy", y, pred, np.zeros(7), 3)
    assert acc.value == pytest.approx(5 / 7) and acc.n == 7 and acc.ci_low < 5 / 7 < acc.ci_high
    # per class F1: 1.0, 0.5, 2/3 -> mean 0.7222
    assert rm.macro_f1(y, pred, 3) == pytest.approx((1.0 + 0.5 + 2 / 3) / 3)
    # scikit-learn's docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333
    assert rm.average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(5 / 6)


def test_log_loss_and_bootstrap_interval_are_reproducible() -> None:
    y = np.array([1, 0, 1, 1, 0] * 40)
    p = np.array([0.9, 0.2, 0.6, 0.7, 0.4] * 40)
    expected = -np.mean(np.log([0.9, 0.8, 0.6, 0.7, 0.6]))
    a = rm.measure("log_loss", y, (p >= 0.5).astype(int), p, 2)
    b = rm.measure("log_loss", y, (p >= 0.5).astype(int), p, 2)
    assert a.value == pytest.approx(expected) and a == b
    assert a.ci_low <= a.value <= a.ci_high


def test_what_the_published_rows_can_measure() -> None:
    assert rm.measurable("roc_auc", binary=True) and rm.measurable("log_loss", binary=True)
    assert rm.measurable("macro_f1", binary=False) and not rm.measurable("log_loss", binary=False)
    assert rm.measure("accuracy", np.array([]), np.array([]), np.array([]), 2).value is None
