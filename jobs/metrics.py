"""Held-out metrics for ``metrics.json``, and optional ROC/PR plots.

Names match the spec's gate metrics (``BINARY_METRICS`` / ``MULTICLASS_METRICS`` in
``mlbatch.spec``): roc_auc, pr_auc, accuracy, f1, log_loss; accuracy, macro_f1, log_loss.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from sklearn import metrics as skm

BINARY_METRICS = ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss")
MULTICLASS_METRICS = ("accuracy", "macro_f1", "log_loss")


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
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """``y`` holds class indices into ``classes``; ``proba`` is (rows, len(classes))."""
    labels = list(range(len(classes)))
    pred = proba.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(skm.log_loss(y, proba, labels=labels)),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
    }


def curve_pngs(y: np.ndarray, p1: np.ndarray) -> dict[str, bytes]:
    """ROC and PR curves as PNG bytes, or nothing when matplotlib is not installed.

    Plots are a convenience for people, never a dependency of the images: no matplotlib, no plots.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display in a container
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    out: dict[str, bytes] = {}
    fpr, tpr, _ = skm.roc_curve(y, p1)
    prec, rec, _ = skm.precision_recall_curve(y, p1)
    for name, (xs, ys, xlabel, ylabel, title) in {
        "roc.png": (fpr, tpr, "false positive rate", "true positive rate", "ROC"),
        "pr.png": (rec, prec, "recall", "precision", "precision-recall"),
    }.items():
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(xs, ys)
        if name == "roc.png":
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.01))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[name] = buf.getvalue()
    return out
