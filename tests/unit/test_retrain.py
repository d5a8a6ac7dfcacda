"""train.retrain: the spec's policy and the decision (material, min_interval, drift) with its reason."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from mlbatch.maths.retrain import Inputs, decide, human_duration
from mlbatch.spec import OnLabels, Retrain, SpecError, load_spec

from tests.support.paths import REPO
from tests.support.specs import write_spec

NOW = datetime(2026, 11, 22, 12, 0)


def _inputs(**kw: object) -> Inputs:
    base = {
        "now": NOW,
        "latest_sync_id": "s2",
        "production_version": "20261101-abc",
        "production_sync_id": "s1",
        "production_rows": 30_000,
        "changed_rows": 120,
    }
    return Inputs(**(base | kw))  # type: ignore[arg-type]


def test_defaults_are_the_issue_s_values() -> None:
    policy = load_spec(REPO / "dags" / "specs" / "device_gender.yaml").train.retrain
    assert policy.on_labels == OnLabels(min_changed_rows=5000, min_changed_fraction=0.05, min_interval="1d")
    assert policy.on_labels.min_interval_seconds == 86400 and policy.on_drift is None


def test_the_spec_takes_false_thresholds_and_drift(tmp_path) -> None:
    def edit(raw: dict) -> None:
        raw["train"]["retrain"] = {
            "on_labels": {"min_changed_rows": 10, "min_interval": "12h"},
            "on_drift": {"psi": 0.3, "days": 2},
        }

    policy = load_spec(write_spec(tmp_path, edit)).train.retrain
    assert policy.on_labels.min_changed_rows == 10 and policy.on_labels.min_changed_fraction == 0.05
    assert policy.on_labels.min_interval_seconds == 12 * 3600 and policy.on_drift.days == 2
    off = load_spec(write_spec(tmp_path, lambda r: r["train"].update(retrain={"on_labels": False})))
    assert off.train.retrain.on_labels is False


@pytest.mark.parametrize(
    ("retrain", "field"),
    [
        ({"on_labels": {"min_interval": "soon"}}, "train.retrain.on_labels.min_interval"),
        ({"on_labels": {"min_changed_row": 5}}, "train.retrain.on_labels.min_changed_row"),
        ({"on_drift": {"days": 0}}, "train.retrain.on_drift.days"),
    ],
)
def test_a_bad_policy_names_its_field(tmp_path, retrain: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path, lambda r: r["train"].update(retrain=retrain)))
    assert any(f.startswith(field) for f, _ in err.value.problems), err.value.problems


def test_a_small_change_is_not_material_and_says_so() -> None:
    d = decide(Retrain(), _inputs(changed_rows=120))
    assert not d.retrain
    assert d.reason == (
        "not material: 120 changed rows (0.4%) since the production model's snapshot < 5,000 rows and < 5%"
    )


@pytest.mark.parametrize(("changed", "met"), [(5_000, ">= 5,000 rows"), (1_500, ">= 5%")])
def test_either_threshold_is_material(changed: int, met: str) -> None:
    d = decide(Retrain(), _inputs(changed_rows=changed))
    assert d.retrain and d.trigger == "labels" and d.sync_id == "s2" and d.reason.endswith(met)
    assert d.reason.startswith(f"material: {changed:,} changed rows")


def test_min_interval_counts_from_the_last_training_start() -> None:
    d = decide(Retrain(), _inputs(changed_rows=9_000, last_started_at=NOW - timedelta(hours=3), last_sync_id="s1"))
    assert not d.retrain
    assert d.reason.startswith("within min_interval: last training started 3 h ago < 1 d (material: 9,000")
    later = decide(Retrain(), _inputs(changed_rows=9_000, last_started_at=NOW - timedelta(days=1, minutes=1)))
    assert later.retrain


def test_labels_already_trained_on_are_not_requested_again() -> None:
    d = decide(Retrain(), _inputs(changed_rows=9_000, last_started_at=NOW - timedelta(days=3), last_sync_id="s2"))
    assert not d.retrain and "training already started on sync s2" in d.reason


def test_no_production_model_trains_and_no_snapshot_does_not() -> None:
    assert decide(Retrain(), _inputs(production_version=None, changed_rows=0)).retrain
    assert not decide(Retrain(), _inputs(latest_sync_id=None)).retrain


def test_on_labels_false_never_trains_on_labels_but_drift_does() -> None:
    off = Retrain(on_labels=False)
    d = decide(off, _inputs(changed_rows=50_000))
    assert not d.retrain and d.reason == "on_labels is false: label changes never start training"
    drifted = [
        ("2026-11-22", 0.4, "predictions"),
        ("2026-11-21", 0.3, "feature os_version"),
        ("2026-11-20", 0.5, "predictions"),
    ]
    with_drift = Retrain(on_labels=False, on_drift={"psi": 0.25, "days": 3})
    d = decide(with_drift, _inputs(drifted_days=drifted))
    assert d.retrain and d.trigger == "drift"
    assert (
        d.reason == "drift: PSI > 0.25 on 3 consecutive day(s) (2026-11-22 predictions 0.400, "
        "2026-11-21 feature os_version 0.300, 2026-11-20 predictions 0.500)"
    )
    assert not decide(with_drift, _inputs(drifted_days=drifted[:2])).retrain


def test_human_durations() -> None:
    assert [human_duration(s) for s in (600, 3 * 3600, 86400, 36 * 3600)] == ["10 min", "3 h", "1 d", "1.5 d"]


def test_drifted_days_are_the_production_version_s_consecutive_days(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from mlbatch.backends.env import Environment
    from mlbatch.names import summary_key
    from mlbatch.stages import retrain as stage
    from mlbatch.stages.context import RunContext

    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    spec = load_spec(write_spec(tmp_path, lambda r: r["train"].update(retrain={"on_drift": {"psi": 0.25, "days": 2}})))
    ctx = RunContext(env=Environment.from_env(), spec=spec, ds="2026-11-24", run_id="r")
    for ds, psi, version in (("2026-11-24", 0.4, "v1"), ("2026-11-23", 0.3, "v1"), ("2026-11-22", 0.9, "v0")):
        ctx.env.store.put_json(summary_key(spec.name, ds), {"model_version": [version], "drift": {"score_psi": psi}})
    assert stage._drifted_days(ctx, "v1") == [("2026-11-24", 0.4, "predictions"), ("2026-11-23", 0.3, "predictions")]
    assert stage._drifted_days(ctx, "v0") == []  # not today's version
    calm = {"model_version": ["v1"], "drift": {"score_psi": 0.1}}
    ctx.env.store.put_json(summary_key(spec.name, "2026-11-23"), calm)
    assert stage._drifted_days(ctx, "v1") == [("2026-11-24", 0.4, "predictions")]
    # Calm predictions but a feature far from the training data: the day drifted, and says which.
    features = {"max": {"feature": "screen_hours", "psi": 0.61}, "psi": {"screen_hours": 0.61, "age": 0.02}}
    ctx.env.store.put_json(summary_key(spec.name, "2026-11-23"), {**calm, "feature_drift": features})
    assert stage._drifted_days(ctx, "v1") == [
        ("2026-11-24", 0.4, "predictions"),
        ("2026-11-23", 0.61, "feature screen_hours"),
    ]
    # A first day with no earlier summary has no prediction PSI; its feature PSI still counts.
    ctx.env.store.put_json(
        summary_key(spec.name, "2026-11-23"), {"model_version": ["v1"], "drift": None, "feature_drift": features}
    )
    assert stage._drifted_days(ctx, "v1")[1] == ("2026-11-23", 0.61, "feature screen_hours")
    monkeypatch.setattr(stage.registry, "production", lambda db, m: SimpleNamespace(version="v1", lineage={}))
    found = stage.inputs(ctx)
    assert found.latest_sync_id is None and found.last_started_at is None  # no labels yet: the DB is empty
