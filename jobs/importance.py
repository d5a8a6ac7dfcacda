"""Feature importance of a trained version, for ``feature_importance.json`` and its report.

Two methods, by family:

- ``gain`` (xgboost): the booster's own figure, the mean loss reduction of the splits on each
  feature (``total_gain`` too: gain times the number of splits). Free: read from the trees.
- ``permutation`` (the torch families, or any family without a figure of its own): how much the
  gate metric on the held-out test rows gets worse when one feature column is shuffled, breaking
  its link to the label while keeping its distribution. The mean over ``REPEATS`` shuffles, with
  their standard deviation. It costs one prediction of the sampled rows per feature and repeat,
  so the rows are a seeded sample of at most ``MAX_ROWS``: a 10M-row table's test split must not
  be predicted hundreds of times over.

Every feature is listed (importance 0 for a feature no tree splits on), most important first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn import metrics as skm

FILE = "feature_importance.json"
MAX_ROWS = 5_000
REPEATS = 3
LOWER_IS_BETTER = {"log_loss"}


def metric_value(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    """The gate metric, as metrics.json computes it (jobs.metrics), from class probabilities."""
    k = proba.shape[1]
    if metric == "log_loss":
        return float(skm.log_loss(y, proba, labels=list(range(k))))
    if metric == "accuracy":
        return float(skm.accuracy_score(y, proba.argmax(axis=1)))
    if metric == "macro_f1":
        return float(skm.f1_score(y, proba.argmax(axis=1), average="macro", labels=list(range(k)), zero_division=0))
    p1 = proba[:, 1]  # binary metrics: the positive class is classes[1]
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, p1))
    if metric == "pr_auc":
        return float(skm.average_precision_score(y, p1))
    if metric == "f1":
        return float(skm.f1_score(y, (p1 >= 0.5).astype(np.int64), zero_division=0))
    raise ValueError(f"no permutation importance for metric {metric!r}")


def _ranked(values: dict[str, float], extra: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"feature": f, "importance": float(v), **((extra or {}).get(f, {}))} for f, v in values.items()
    ]
    rows.sort(key=lambda r: (-r["importance"], r["feature"]))
    return rows


def gain_importance(gain: dict[str, float], total_gain: dict[str, float], features: list[str]) -> dict[str, Any]:
    """``gain``/``total_gain``: the booster's ``get_score`` by feature name; unused features get 0."""
    return {
        "method": "gain",
        "description": "xgboost gain: mean loss reduction of the splits on the feature",
        "features": _ranked(
            {f: gain.get(f, 0.0) for f in features},
            {f: {"total_gain": float(total_gain.get(f, 0.0))} for f in features},
        ),
    }


def permutation_importance(
    predict_proba: Callable[[pa.Table], np.ndarray], data: pa.Table, y: np.ndarray, metric: str, seed: int
) -> dict[str, Any]:
    """Drop of ``metric`` on ``data`` (the test rows) when each column is shuffled; positive =
    the model relies on the feature. ``predict_proba``: the family's, on a pyarrow table."""
    rng = np.random.default_rng(seed)
    if data.num_rows > MAX_ROWS:
        keep = np.sort(rng.choice(data.num_rows, MAX_ROWS, replace=False))
        data, y = data.take(pa.array(keep)), y[keep]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    base = metric_value(metric, y, predict_proba(data))
    means: dict[str, float] = {}
    spread: dict[str, dict[str, float]] = {}
    for j, name in enumerate(data.column_names):
        drops = []
        for _ in range(REPEATS):
            shuffled = data.set_column(j, name, data.column(j).take(pa.array(rng.permutation(data.num_rows))))
            drops.append(sign * (base - metric_value(metric, y, predict_proba(shuffled))))
        means[name] = float(np.mean(drops))
        spread[name] = {"std": float(np.std(drops))}
    return {
        "method": "permutation",
        "description": f"drop of {metric} on held-out test rows when the feature is shuffled",
        "metric": metric,
        "baseline": base,
        "rows": data.num_rows,
        "repeats": REPEATS,
        "features": _ranked(means, spread),
    }
