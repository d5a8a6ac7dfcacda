"""``train.retrain`` of a spec: when changed labels or drift start training (the labels DAG decides,
:mod:`mlbatch.maths.retrain`). Validated with the rest of the spec; imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from mlbatch.spec.base import Strict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> float:
    """Seconds of a spec duration: a number and a unit, ``30m``, ``12h``, ``1d``, ``2w``."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration: a number and a unit m, h, d or w (e.g. 12h, 1d)")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


class OnLabels(Strict):
    """When changed labels retrain: a material change, and not too soon after the last training."""

    min_changed_rows: int = Field(
        5000,
        ge=1,
        description="Changed label rows (inserted, updated or deleted keys) since the production model's label "
        "snapshot that make a change material.",
    )
    min_changed_fraction: float = Field(
        0.05,
        gt=0,
        description="The same as a share of the production snapshot's rows; reaching either threshold is material.",
    )
    min_interval: str = Field(
        "1d",
        description="Least wall-clock time from the start of the last training run before labels start another "
        "(m, h, d or w: 12h, 1d); a material change waits and starts training once it has passed.",
    )

    _interval = field_validator("min_interval")(classmethod(lambda cls, v: duration_seconds(v) and v))

    @property
    def min_interval_seconds(self) -> float:
        return duration_seconds(self.min_interval)


class OnDrift(Strict):
    """Retrain when the predictions or a feature drift for days in a row (optional)."""

    psi: float = Field(
        0.25,
        gt=0,
        description="PSI above which a day counts as drifted: the predictions' (a day's scores against the day "
        "before) or any numeric feature's (the day against the production model's training data), both as "
        "the day's summary.json reports them (mlbatch.maths.drift).",
    )
    days: int = Field(
        3,
        ge=1,
        le=60,
        description="Consecutive drifted days of the production version, up to the labels run's day, that retrain "
        "(at most once per on_labels.min_interval, 1d when on_labels is false).",
    )


class Retrain(Strict):
    """What starts training besides train.schedule: changed labels, drift (the labels DAG decides)."""

    on_labels: OnLabels | Literal[False] = Field(
        default_factory=OnLabels,
        description="Thresholds of a material label change, or false: label changes never start training.",
    )
    on_drift: OnDrift | None = Field(
        None, description="Retrain on sustained prediction or feature drift; unset: never."
    )

    @field_validator("on_labels", mode="before")
    @classmethod
    def _true_means_defaults(cls, v: Any) -> Any:
        # `on_labels: true` reads as "on, with the defaults"; only false turns it off.
        return {} if v is True else v
