"""One PSI: its rule for empty bins, its levels, and the gate and the report agreeing on it."""

from __future__ import annotations

import json
import math
import re
import subprocess

import numpy as np
import pytest
from mlbatch.maths import drift
from mlbatch.maths.gates import GateFailed
from mlbatch.reporting import reports
from mlbatch.stages.score import predictions_gate

from tests.support.paths import REPO
from tests.support.publish import fabricate, make_env, run_day, write_spec

DS, NEXT = "2026-11-20", "2026-11-21"
KEYS = list(range(1000))


def test_counts_and_shares_give_the_same_psi() -> None:
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert drift.psi([100, 300], [300, 100]) == pytest.approx(drift.psi([0.25, 0.75], [0.75, 0.25]))
    assert drift.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2), rel=1e-12)


def test_empty_bins_are_floored_on_both_sides_without_renormalising() -> None:
    floor = drift.PSI_FLOOR
    expected = (1 - floor) * math.log(1 / floor) + (floor - 1) * math.log(floor / 1)
    assert drift.psi([5, 0], [0, 5]) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(drift.psi([1, 0, 0], [0, 0, 1]))


def test_a_side_without_rows_has_no_psi_and_an_unknown_level() -> None:
    assert math.isnan(drift.psi([0, 0], [3, 4]))
    summary = drift.summarize([3, 4], [0, 0])
    assert summary.level == "unknown" and summary.as_dict() == {"psi": None, "level": "unknown", "bins": 2}


def test_bad_inputs_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="same bins on both sides, got 1 and 2"):
        drift.psi([1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        drift.psi([1, -1], [1, 1])


@pytest.mark.parametrize(
    ("value", "level"), [(0.0, "stable"), (0.0999, "stable"), (0.1, "moderate"), (0.25, "shifted")]
)
def test_levels(value: float, level: str) -> None:
    assert drift.level(value) == level


def test_score_histogram_puts_one_in_the_last_bin_and_skips_nan_and_out_of_range() -> None:
    counts = drift.score_histogram(np.array([0.0, 0.05, 0.1, 0.95, 1.0, math.nan, -0.1, 1.5]))
    assert counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_the_formula_is_written_once() -> None:
    # `git grep` over the package: the PSI sum appears in mlbatch/maths/drift.py only.
    out = subprocess.run(
        [
            "git",
            "grep",
            "--untracked",
            "-n",
            "-E",
            r"np\.log\(a / e\)|math\.log\(a / e\)|log\(max\(a",
            "--",
            "plugins",
            "jobs",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    ).stdout
    assert [line.split(":")[0] for line in out.splitlines()] == ["plugins/mlbatch/maths/drift.py"]


def _gate_psi(caplog: pytest.LogCaptureFixture) -> tuple[bool, float]:
    """The prediction gate's score_psi verdict and figure, from its log line."""
    line = next(r.getMessage() for r in caplog.records if "score_psi:" in r.getMessage())
    found = re.search(r"(ok  |FAIL) score_psi: observed ([0-9.e+-]+)", line)
    assert found, line
    return found.group(1) == "ok  ", float(found.group(2))


@pytest.mark.parametrize(
    ("today", "passes"),
    [
        # both days leave bins 8 and 9 empty; a small shift inside bins 0-7
        ([(k % 80) / 100 + 0.005 if k % 7 else 0.405 for k in KEYS], True),
        # every score in bin 5: nine empty bins today, the gate blocks
        ([0.505 + (k % 10) / 100 for k in KEYS], False),
    ],
)
def test_gate_and_report_agree_on_the_same_days(tmp_path, caplog, today: list[float], passes: bool) -> None:
    env, spec = make_env(tmp_path), write_spec(tmp_path)
    before = [(k % 80) / 100 + 0.005 for k in KEYS]  # bins 0-7 only
    first = fabricate(env, spec, DS, KEYS, before)
    run_day(first)
    reports.scoring_summary(first)

    ctx = fabricate(env, spec, NEXT, KEYS, today)
    caplog.set_level("INFO")
    caplog.clear()  # only this day's gate lines
    try:
        predictions_gate(ctx)
        blocked = False
    except GateFailed:
        blocked = True
    gate_ok, gate_value = _gate_psi(caplog)
    report = json.loads(env.store.get_bytes(env.store.key(reports.scoring_summary(ctx))))["drift"]

    assert report["reference_ds"] == DS
    assert gate_ok is passes and blocked is not passes
    assert report["score_psi"] == pytest.approx(gate_value, rel=1e-3)  # the log line shows 4 digits
    assert (report["score_psi"] <= spec.publish.max_psi) is gate_ok
    assert report["level"] == drift.level(report["score_psi"])
