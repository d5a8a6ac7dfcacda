"""The task docs of :mod:`mlbatch.airflow.pipeline` that depend on the spec (shown in the Airflow UI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbatch import names

if TYPE_CHECKING:
    from mlbatch.spec import ModelSpec


def realized_doc(spec: ModelSpec) -> str:
    m = spec.monitoring
    return (
        f"Measure each published day of the last {m.lookback_days} against the labels that "
        "arrived after its version was trained (gate metric, labelled rows, 95% interval) into "
        f"`{names.REALIZED_PERFORMANCE_TABLE}`; below `train.gate.min` on >= {m.min_rows} rows: "
        + ("alert on the failure webhook and flag the version `degraded`." if m.alert else "")
        + (" Then request a retrain." if m.retrain_on_degradation else "")
    )


def retrain_doc(spec: ModelSpec) -> str:
    policy = spec.train.retrain
    on = policy.on_labels
    labels = (
        "label changes never start training"
        if on is False
        else f"train when the keys changed since the production model's snapshot reach {on.min_changed_rows:,} "
        f"or {on.min_changed_fraction:.0%}, at most once per {on.min_interval} (from the last training start)"
    )
    drift = policy.on_drift
    drifted = (
        f"; or when the predictions' or a feature's PSI exceeds {drift.psi:g} {drift.days} days in a row"
        if drift
        else ""
    )
    return f"Decide whether this sync starts training (`train.retrain`): {labels}{drifted}. Logs the reason."


def model_gate_doc(spec: ModelSpec) -> str:
    return "Pass the candidate if the metric clears the spec's minimum and does not regress production; " + (
        "it then waits for a person's approval." if spec.train.approval.required else "promote it."
    )


def approval_doc(spec: ModelSpec) -> str:
    return (
        "A person approves the candidate (Required actions): it against production, with its "
        f"report. Approve promotes; Reject, or no answer within {spec.train.approval.timeout_hours:g} h, keeps the "
        "champion. The registry records who decided, when, and why."
    )
