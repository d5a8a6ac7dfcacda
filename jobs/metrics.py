"""Held-out metrics for ``metrics.json``, and the ROC/PR plots.

Every name in :data:`jobs.contract.BINARY_METRICS` / ``MULTICLASS_METRICS`` (the metrics a spec's
gate may name) is a key here; tests/unit/jobs/test_contract.py checks it. Beyond
those, metrics.json holds precision, recall, the confusion matrix (rows: true class, columns:
predicted, in the order of ``classes``), per-class figures for multiclass models (one-vs-rest
ROC AUC and PR AUC included) and the curves as ``CURVE_POINTS`` points each, so a report can
redraw them without the model. matplotlib is imported only inside :func:`curve_pngs`: scoring
never loads it.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
from sklearn import metrics as skm

CURVE_POINTS = 101


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def curve_points(y: np.ndarray, p: np.ndarray) -> dict[str, dict[str, list[float]]] | None:
    """ROC: true positive rate at evenly spaced false positive rates. PR: interpolated precision
    (the best precision at this recall or above) at evenly spaced recalls. None when ``y`` holds
    one class only: neither curve exists then."""
    if len(y) == 0 or y.min() == y.max():
        return None
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    fpr, tpr, _ = skm.roc_curve(y, p)
    prec, rec, _ = skm.precision_recall_curve(y, p)
    rec, prec = rec[::-1], prec[::-1]  # recall increasing
    best = np.maximum.accumulate(prec[::-1])[::-1]
    idx = np.searchsorted(rec, grid, side="left").clip(0, len(rec) - 1)
    return {
        "roc": {"fpr": _round(grid), "tpr": _round(np.interp(grid, fpr, tpr))},
        "pr": {"recall": _round(grid), "precision": _round(best[idx])},
    }


def binary_metrics(y: np.ndarray, p1: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """``y`` is 1 for classes[1] (the positive class), ``p1`` its predicted probability."""
    pred = (p1 >= threshold).astype(np.int64)
    return {
        "roc_auc": float(skm.roc_auc_score(y, p1)),
        "pr_auc": float(skm.average_precision_score(y, p1)),
        "log_loss": float(skm.log_loss(y, p1, labels=[0, 1])),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "threshold": threshold,
        "positive_rate": float(y.mean()),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "curves": curve_points(y, p1),
    }


def _one_vs_rest(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    if y.min() == y.max():
        return None, None
    return float(skm.roc_auc_score(y, p)), float(skm.average_precision_score(y, p))


def multiclass_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """``y`` holds class indices into ``classes``; ``proba`` is (rows, len(classes))."""
    labels = list(range(len(classes)))
    pred = proba.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class, curves = {}, {}
    for i, c in enumerate(classes):
        yi = (y == i).astype(np.int64)
        auc, ap = _one_vs_rest(yi, proba[:, i])
        per_class[c] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "roc_auc": auc,
            "pr_auc": ap,
        }
        curves[c] = curve_points(yi, proba[:, i])
    aucs = [v["roc_auc"] for v in per_class.values() if v["roc_auc"] is not None]
    aps = [v["pr_auc"] for v in per_class.values() if v["pr_auc"] is not None]
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "log_loss": float(skm.log_loss(y, proba, labels=labels)),
        "roc_auc": float(np.mean(aucs)) if aucs else None,  # macro one-vs-rest
        "pr_auc": float(np.mean(aps)) if aps else None,
        "per_class": per_class,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "curves": curves,
    }


def curve_pngs(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, bytes]:
    """roc.png and pr.png: one curve for a binary model (positive class ``classes[1]``), one
    one-vs-rest curve per class for a multiclass model. Empty when matplotlib is not installed:
    the curves' points are in metrics.json all the same."""
    try:
        # matplotlib (about 0.5 s to import): only the training report's curves need it.
        import matplotlib

        matplotlib.use("Agg")  # no display in a container
        # matplotlib (about 0.5 s to import): only the training report's curves need it.
        import matplotlib.pyplot as plt
    except ImportError:
        print("train: matplotlib is not installed: no roc.png/pr.png (curves are in metrics.json)", file=sys.stderr)
        return {}
    if len(classes) == 2:
        series = [(classes[1], (y == 1).astype(np.int64), proba[:, 1])]
    else:
        series = [(c, (y == i).astype(np.int64), proba[:, i]) for i, c in enumerate(classes)]
    out: dict[str, bytes] = {}
    for name, xlabel, ylabel, title in (
        ("roc.png", "false positive rate", "true positive rate", "ROC"),
        ("pr.png", "recall", "precision", "precision-recall"),
    ):
        fig, ax = plt.subplots(figsize=(5, 5))
        for label, yi, p in series:
            if yi.min() == yi.max():
                continue
            if name == "roc.png":
                xs, ys, _ = skm.roc_curve(yi, p)
                score = skm.roc_auc_score(yi, p)
            else:
                ys, xs, _ = skm.precision_recall_curve(yi, p)
                score = skm.average_precision_score(yi, p)
            ax.plot(xs, ys, label=f"{label} ({score:.3f})")
        if name == "roc.png":
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        if len(series) > 1:
            title += " (one-vs-rest)"
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right" if name == "roc.png" else "lower left", fontsize="small")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[name] = buf.getvalue()
    return out
