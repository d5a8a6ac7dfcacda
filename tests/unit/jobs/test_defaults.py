"""The families' derived defaults (the torch schedule, the plateau cut of the learning rate) and
feature importance: the logic, on small in-process fits; accuracy is benchmarks/bench_families.py's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.support.jobs import FAST, features_table, run_job, write_config, write_labels, write_unload


def test_batch_size_follows_the_table_between_its_bounds() -> None:
    from jobs.families.torch_common import MAX_BATCH, MIN_BATCH, auto_batch_size

    assert auto_batch_size(0) == auto_batch_size(124) == MIN_BATCH == 32  # wine's training split
    assert auto_batch_size(1257) == 32  # digits': 40 steps an epoch, not 3
    assert auto_batch_size(5000) == 128  # 5000 / 32 = 156 -> the nearest power of two
    assert auto_batch_size(20_000) == auto_batch_size(10_000_000) == MAX_BATCH == 512


def test_schedule_keeps_large_tables_cost_and_gives_small_ones_steps() -> None:
    from jobs.families.torch_common import MAX_EPOCHS, STEP_BUDGET, TRAIN_DEFAULTS, schedule

    big = schedule(TRAIN_DEFAULTS, 10_000_000)  # production size: what it was before, no more
    assert big == {"batch_size": 512, "max_epochs": 30, "patience": 3, "lr_patience": 1}

    digits = schedule(TRAIN_DEFAULTS, 1257)
    steps = math.ceil(1257 / 32)
    assert digits["batch_size"] == 32 and digits["max_epochs"] * steps >= STEP_BUDGET
    assert digits["patience"] == 10 and digits["lr_patience"] == 5

    wine = schedule(TRAIN_DEFAULTS, 124)
    assert wine["max_epochs"] == MAX_EPOCHS and wine["patience"] == 20  # bounded however small

    # A spec's own numbers win over the rule.
    mine = schedule({**TRAIN_DEFAULTS, "batch_size": 64, "max_epochs": 5, "patience": 2}, 1257)
    assert mine == {"batch_size": 64, "max_epochs": 5, "patience": 2, "lr_patience": 1}


def test_learning_rate_is_cut_on_a_plateau_and_training_stops_after_patience() -> None:
    from jobs.families.torch_mlp import TorchMLPFamily

    rng = np.random.default_rng(0)
    # Labels independent of the features: the validation loss stops improving within a few epochs.
    x = pa.table({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = rng.integers(0, 2, 300)
    params = {"hidden": [64], "lr": 0.05, "max_epochs": 60, "patience": 6, "lr_patience": 2, "lr_factor": 0.5}
    m = TorchMLPFamily.fit(
        x.slice(0, 200), y[:200], x.slice(200), y[200:], classes=["n", "y"], params=params, seed=1, metric="roc_auc"
    )
    history = m.meta["history"]
    # Replay the rule on the recorded validation losses: the learning rate each epoch ran with.
    expected, lr, best, waited = [], 0.05, math.inf, 0
    for h in history:
        expected.append(lr)
        if h["valid_loss"] < best - 1e-4:
            best, waited = h["valid_loss"], 0
            continue
        waited += 1
        if waited >= 6:
            break
        if waited % 2 == 0:
            lr *= 0.5
    assert [h["lr"] for h in history] == pytest.approx(expected)
    assert waited == 6 and len(history) == m.meta["best_iteration"] + 6 < 60  # stopped early
    assert min(expected) <= 0.0125  # at least two cuts happened
    assert m.meta["params"]["batch_size"] == 32  # the derived value is what the model records


def test_permutation_importance_measures_what_the_model_uses() -> None:
    from jobs.importance import MAX_ROWS, permutation_importance

    rng = np.random.default_rng(0)
    n = MAX_ROWS + 500
    data = pa.table({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = (data.column("signal").to_numpy() > 0).astype(int)

    def predict_proba(t: pa.Table) -> np.ndarray:  # a model that reads "signal" only
        p1 = 1 / (1 + np.exp(-4 * t.column("signal").to_numpy()))
        return np.column_stack([1 - p1, p1])

    auc = permutation_importance(predict_proba, data, y, "roc_auc", seed=3)
    assert auc["rows"] == MAX_ROWS and auc["method"] == "permutation" and auc["baseline"] == pytest.approx(1.0)
    top, other = auc["features"]
    assert top["feature"] == "signal" and top["importance"] > 0.4  # shuffled: AUC about 0.5
    assert other == {"feature": "noise", "importance": 0.0, "std": 0.0}
    # log loss is lower-is-better: the importance is still the loss the shuffle costs, positive
    ll = permutation_importance(predict_proba, data, y, "log_loss", seed=3)
    assert ll["features"][0]["feature"] == "signal" and ll["features"][0]["importance"] > 0.5


def test_xgboost_gain_names_every_feature_even_without_booster_names() -> None:
    from jobs.families.xgboost_family import XGBoostFamily

    table, truth = features_table(n=1500, seed=5)
    # "[" in a name makes the family train without xgboost feature names (f0, f1, ...)
    x = table.drop_columns(["device_id"]).rename_columns(["x[1]", "x2", "n_apps", "brand"])
    m = XGBoostFamily.fit(
        x.slice(0, 1000), truth[:1000], x.slice(1000), truth[1000:], classes=["f", "m"], params=FAST, seed=0,
        metric="roc_auc",
    )  # fmt: skip
    imp = m.feature_importance()
    assert imp["method"] == "gain"
    assert sorted(f["feature"] for f in imp["features"]) == ["brand", "n_apps", "x2", "x[1]"]
    assert imp["features"][0]["feature"] == "x[1]"  # the strongest signal (weight 2 in the logit)
    values = [f["importance"] for f in imp["features"]]
    assert values == sorted(values, reverse=True) and all(f["total_gain"] >= f["importance"] for f in imp["features"])


def test_train_job_writes_feature_importance_for_a_torch_family(tmp_path: Path) -> None:
    table, truth = features_table(n=1500, seed=6)
    manifest = write_unload(table, tmp_path / "unload")
    labels = write_labels(tmp_path / "labels.parquet", table.column("device_id").to_numpy(), [
        ["female", "male"][t] for t in truth
    ])  # fmt: skip
    config = write_config(
        tmp_path / "config.json", ["female", "male"], family="torch_mlp", params={"max_epochs": 5, "hidden": [16]}
    )
    out = (tmp_path / "model").as_uri() + "/"
    proc = run_job("train", "--config", config, "--features", manifest, "--labels", labels, "--output", out)
    assert proc.returncode == 0, proc.stderr
    imp = json.loads((tmp_path / "model" / "feature_importance.json").read_text())
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert imp["method"] == "permutation" and imp["metric"] == "roc_auc" and imp["rows"] == metrics["n_test"]
    assert imp["baseline"] == pytest.approx(metrics["roc_auc"])
    assert {f["feature"] for f in imp["features"]} == {"x1", "x2", "n_apps", "brand"}
    assert imp["features"][0]["feature"] == "x1"  # the signal; x2 and n_apps are noise
