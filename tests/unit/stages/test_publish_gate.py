"""The prediction gate: every check blocks with its numbers, and a blocked day writes nothing."""

from __future__ import annotations

import math

import pytest
from mlbatch.maths.drift import psi
from mlbatch.maths.gates import GateFailed
from mlbatch.stages.score import PROFILE_STATE, predictions_gate

from tests.support.publish import fabricate, make_env, run_day, table_rows, write_spec

DS, NEXT = "2026-11-20", "2026-11-21"
KEYS = list(range(1000))
UNIFORM = [(k % 100) / 100 + 0.005 for k in KEYS]  # 10 equally full score bins, half neg half pos


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path)


def blocked(ctx, pattern: str) -> GateFailed:
    before = table_rows(ctx.env) if ctx.env.appdb.has_table("pubtest_predictions") else []
    with pytest.raises(GateFailed, match=pattern) as err:
        predictions_gate(ctx)
    assert not ctx.env.store.exists(ctx.state_key(PROFILE_STATE)), "a blocked gate stores no profile"
    after = table_rows(ctx.env) if ctx.env.appdb.has_table("pubtest_predictions") else []
    assert after == before
    return err.value


def failed(err: GateFailed) -> list[str]:
    return [c.name for c in err.checks if not c.ok]


def test_first_day_passes_and_says_there_is_nothing_to_compare(env, spec):
    ctx = fabricate(env, spec, DS, KEYS, UNIFORM)
    predictions_gate(ctx)
    profile = env.store.get_json(ctx.state_key(PROFILE_STATE))
    assert profile["score_counts"] == [100] * 10 and profile["class_counts"] == {"neg": 500, "pos": 500}


def test_first_day_detail(env, spec, caplog):
    caplog.set_level("INFO")
    predictions_gate(fabricate(env, spec, DS, KEYS, UNIFORM))
    assert "score_psi: observed n/a, threshold <= 0.25 (first published day for pubtest" in caplog.text


def test_row_count_must_equal_the_scoring_input(env, spec):
    err = blocked(
        fabricate(env, spec, DS, KEYS, UNIFORM, expected_rows=1001),
        r"rows_equal_scoring_input: observed 1,000, threshold == 1,001",
    )
    assert failed(err) == ["rows_equal_scoring_input"]


def test_null_key(env, spec):
    err = blocked(fabricate(env, spec, DS, [None, *KEYS[1:]], UNIFORM), r"null_keys: observed 1, threshold == 0")
    assert failed(err) == ["null_keys"]


def test_null_score(env, spec):
    scores = [None, None, *UNIFORM[2:]]
    err = blocked(
        fabricate(env, spec, DS, KEYS, scores, labels=["neg"] * 1000), r"null_scores: observed 2, threshold == 0"
    )
    assert failed(err) == ["null_scores"]


def test_out_of_range_and_nan_scores(env, spec):
    scores = [1.5, -0.25, math.nan, *UNIFORM[3:]]
    err = blocked(
        fabricate(env, spec, DS, KEYS, scores, labels=["neg"] * 1000),
        r"scores_in_range: observed 3 outside, min -0.25, max 1.5",
    )
    assert failed(err) == ["scores_in_range"]


def test_duplicate_keys(env, spec):
    keys = [7, 7, 7, 9, 9, *range(100, 1095)]
    err = blocked(
        fabricate(env, spec, DS, keys, UNIFORM),
        r"duplicate_keys: observed 3, threshold == 0 \(entity_key: repeated keys e.g. \[7, 9\]\)",
    )
    assert failed(err) == ["duplicate_keys"]


def test_score_distribution_shift_against_the_last_published_day(env, spec):
    run_day(fabricate(env, spec, DS, KEYS, UNIFORM))
    shifted = [0.505 + (k % 10) / 100 for k in KEYS]  # all in bin 5: PSI is large; class share 0.5 -> 1.0 too
    err = blocked(
        fabricate(env, spec, NEXT, KEYS, shifted),
        r"score_psi: observed \d+\.\d+, threshold <= 0.25 \(10 score bins against 2026-11-20",
    )
    assert set(failed(err)) == {"score_psi", "class_share_shift"}
    observed = {c.name: c.observed for c in err.checks}
    assert observed["score_psi"] == pytest.approx(psi([100] * 10, [0] * 5 + [1000] + [0] * 4), abs=1e-5)
    assert observed["class_share_shift"] == 0.5


def test_class_share_shift_alone(env, spec):
    run_day(fabricate(env, spec, DS, KEYS, UNIFORM))
    labels = ["pos" if k % 100 >= 50 or k < 400 else "neg" for k in KEYS]  # same scores, 20% more 'pos'
    err = blocked(
        fabricate(env, spec, NEXT, KEYS, UNIFORM, labels=labels),
        r"class_share_shift: observed 0.2, threshold <= 0.1 \(class 'neg' against 2026-11-20",
    )
    assert failed(err) == ["class_share_shift"]


def test_thresholds_come_from_the_spec(env, tmp_path):
    spec = write_spec(tmp_path, "publish: {max_psi: 50, max_class_share_shift: 0.6}\n")
    run_day(fabricate(env, spec, DS, KEYS, UNIFORM))
    shifted = [0.505 + (k % 10) / 100 for k in KEYS]
    assert predictions_gate(fabricate(env, spec, NEXT, KEYS, shifted))["passed"] == 9


def test_a_rerun_compares_with_the_day_before_not_itself(env, spec):
    run_day(fabricate(env, spec, DS, KEYS, UNIFORM))
    shifted = [0.505 + (k % 10) / 100 for k in KEYS]
    ctx = fabricate(env, spec, DS, KEYS, shifted)  # the same day again, now different: nothing earlier
    assert predictions_gate(ctx)["passed"] == 9
