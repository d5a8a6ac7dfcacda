"""Whether the labels DAG starts training now, and why: the policy of ``train.retrain``.

Pure decisions over a few numbers (no I/O, nothing heavy: ``mlbatch status`` and the labels DAG
both call them): :func:`decide` takes what :mod:`mlbatch.stages.retrain` read from the app DB and
the object store and returns a :class:`Decision` whose ``reason`` is the sentence the run's log,
its XCom and ``mlbatch status`` show, e.g. ``not material: 120 changed rows (0.4%) since the
production model's snapshot < 5,000 rows and < 5%``.

The last training start is kept in the object store (:func:`mlbatch.names.last_training_key`): a
train run writes it when it fixes its labels, a labels run when it requests one (the train run it
starts may not have begun when the next sync decides). ``min_interval`` counts from it, in
wall-clock time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from mlbatch.spec import OnDrift, OnLabels, Retrain


@dataclass(frozen=True)
class Inputs:
    """What the decision needs, read by the caller."""

    now: datetime
    latest_sync_id: str | None  # the newest label snapshot (what a training run would read)
    production_version: str | None
    production_sync_id: str | None  # the snapshot the production model was trained on
    production_rows: int  # labels in that snapshot
    changed_rows: int  # keys changed since it (inserted, updated or deleted)
    last_started_at: datetime | None = None  # the last training start (wall clock, UTC)
    last_sync_id: str | None = None  # the snapshot that training read (or was requested on)
    # Consecutive drifted days, newest first: (day, its largest PSI, what drifted: "predictions" or
    # "feature NAME").
    drifted_days: list[tuple[str, float, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    trigger: str = ""  # "labels" or "drift" when retrain
    sync_id: str | None = None  # the snapshot to train on
    changed_rows: int = 0
    changed_fraction: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Evidence(TypedDict):
    """What every decision of a sync records (:class:`Decision`'s last three fields)."""

    sync_id: str | None
    changed_rows: int
    changed_fraction: float | None


def human_duration(seconds: float) -> str:
    """``45 min``, ``3 h``, ``1 d``, ``1.5 d``: how the reasons say an interval."""
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds / 60:.0f} min"


def _material(policy: OnLabels, x: Inputs) -> tuple[bool, str, float | None]:
    if x.production_version is None:
        return True, "no production model yet", None
    fraction = x.changed_rows / x.production_rows if x.production_rows else None
    share = f" ({fraction:.1%})" if fraction is not None else ""
    changed = f"{x.changed_rows:,} changed rows{share} since the production model's snapshot"
    by_rows = x.changed_rows >= policy.min_changed_rows
    by_share = fraction is not None and fraction >= policy.min_changed_fraction
    if by_rows or by_share:
        met = f">= {policy.min_changed_rows:,} rows" if by_rows else f">= {policy.min_changed_fraction:.0%}"
        return True, f"material: {changed} {met}", fraction
    bar = f"< {policy.min_changed_rows:,} rows and < {policy.min_changed_fraction:.0%}"
    return False, f"not material: {changed} {bar}", fraction


def _drift(policy: OnDrift | None, x: Inputs) -> str:
    if policy is None or len(x.drifted_days) < policy.days:
        return ""
    days = ", ".join(f"{ds} {what} {psi:.3f}" for ds, psi, what in x.drifted_days[: policy.days])
    return f"drift: PSI > {policy.psi:g} on {policy.days} consecutive day(s) ({days})"


def decide(policy: Retrain, x: Inputs) -> Decision:
    """Retrain now or not, with the reason (see the module doc)."""
    if x.latest_sync_id is None:
        return Decision(False, "no label snapshot yet")
    drift = _drift(policy.on_drift, x)
    labels = policy.on_labels
    if labels is False:
        if not drift:
            return Decision(False, "on_labels is false: label changes never start training")
        # Drift retraining is throttled like labels are: by the default interval here.
        material, reason, fraction, interval = True, drift, None, OnLabels().min_interval_seconds
    else:
        material, reason, fraction = _material(labels, x)
        if not material and drift:
            material, reason = True, drift
        interval = labels.min_interval_seconds
    trigger = "drift" if reason == drift else "labels"
    common: _Evidence = {"sync_id": x.latest_sync_id, "changed_rows": x.changed_rows, "changed_fraction": fraction}
    if not material:
        return Decision(False, reason, **common)
    if trigger == "labels" and x.last_sync_id == x.latest_sync_id:
        # Training already read (or was asked to read) these very labels; a rejected candidate
        # is not retried on the same labels every hour.
        return Decision(False, f"{reason}, but training already started on sync {x.latest_sync_id}", **common)
    if interval is not None and x.last_started_at is not None:
        elapsed = (x.now - x.last_started_at).total_seconds()
        if elapsed < interval:
            wait = f"last training started {human_duration(elapsed)} ago < {human_duration(interval)}"
            return Decision(False, f"within min_interval: {wait} ({reason})", **common)
    return Decision(True, reason, trigger=trigger, **common)
