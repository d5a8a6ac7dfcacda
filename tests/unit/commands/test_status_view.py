"""``mlbatch status`` at 80 columns: every value whole (wrapped, never cut to ``20261122-…``)."""

from __future__ import annotations

import io

from mlbatch.reporting.status_view import render
from rich.console import Console

MODEL = {
    "name": "device_gender_with_a_rather_long_model_name",
    "labels": {"rows": 31_880, "sync_id": "device_gender-20261207T160146-ff8346", "synced_at": "x"},
    "production_model": {"version": "20261122-0b449041", "metric": "roc_auc", "value": 0.86347},
    "predictions": {"latest_ds": "2026-11-22", "rows": 161_244},
    "export": {"latest_ds": "2026-11-22", "rows": 161_244},
    "realized": {
        "ds": "2026-11-22",
        "model_version": "20261122-0b449041",
        "metric": "roc_auc",
        "value": 0.84,
        "n_labelled": 2_000,
        "ci": [0.823, 0.857],
        "offline": 0.863,
        "days": 1,
        "degraded": True,
    },
    "retrain": {
        "retrain": False,
        "reason": "within min_interval: last training started 3 h ago < 1 d (material: 2,030 changed rows (6.4%) "
        "since the production model's snapshot >= 5%)",
        "last_training_started": "2026-11-22T09:00:00Z",
    },
    "cost": {
        "month": "2026-11",
        "runs": 31,
        "job_seconds": 1234.5,
        "job_vcpu_seconds": 4938.0,
        "job_gpu_seconds": 0.0,
        "warehouse_seconds": None,
        "bytes_unloaded": 56_123_456,
        "rows_published": 4_998_564,
    },
}


def _render(width: int) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(render({"models": [MODEL]}))
    return buf.getvalue()


def test_status_fits_80_columns_and_cuts_nothing() -> None:
    text = _render(80)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "…" not in text
    flat = " ".join(line.strip() for line in lines)
    for whole in (
        "20261122-0b449041 roc_auc=0.8635",
        "device_gender-20261207T160146-ff8346",
        "device_gender_with_a_rather_long_model_name",
        "n=2,000 on 2026-11-22 (offline 0.863) DEGRADED",
        "161,244 on 2026-11-22",
        "no: within min_interval: last training started 3 h ago < 1 d",
        "2026-11, 31 run(s): vCPU 4,938 s, GPU 0 s, warehouse n/a, 56.1 MB unloaded, 4,998,564 rows published",
    ):
        assert whole in flat, (whole, text)


def test_a_narrow_terminal_folds_instead_of_eliding() -> None:
    text = _render(40)
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 40
    assert "20261122-0b449041" in text
