"""Training checkpoints (jobs.checkpoint): a family's fit killed after a checkpoint and run again
resumes from it and ends with the uninterrupted run's model; another job's checkpoint, or one
for other params or data, is never resumed from.

The kill is simulated in process: a Checkpointer that raises right after writing its checkpoint
at step k, as a Spot interruption would end the task there (the real kills, SIGKILL of a local
process and ``docker kill``, are in tests/integration/launchers/test_train_resume.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs import checkpoint as ck
from jobs.checkpoint import Checkpointer, Window
from jobs.io import JobInputError
from jobs.metrics import binary_metrics
from tests.support.jobs import features_table

IDENTITY = {"model": "device_gender", "version": "v1"}
CLASSES = ["female", "male"]
# Deterministic settings: no row or column sampling (xgboost's random engine restarts with the
# process, so sampled rounds after a resume would be other draws; see xgboost_family.boost).
XGB = {"n_estimators": 80, "max_depth": 3, "learning_rate": 0.3, "early_stopping_rounds": 8}
XGB |= {"subsample": 1.0, "colsample_bytree": 1.0}
MLP_LR = 2e-3  # torch_mlp's default
MLP = {"max_epochs": 14, "patience": 4, "lr_patience": 2, "hidden": [16], "batch_size": 64}


class Interrupted(Exception):
    """The task ended (a Spot interruption) right after its checkpoint at ``step``."""


class Dying(Checkpointer):
    def __init__(self, *args: Any, after: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.after = after

    def save(self, step: int, total: int, state: dict[str, Any], payload: bytes) -> None:
        super().save(step, total, state, payload)
        if step >= self.after:
            raise Interrupted(step)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    table, truth = features_table(n=1600, seed=11)
    x = table.drop_columns(["device_id"])
    return {
        "train": (x.slice(0, 1000), truth[:1000]),
        "valid": (x.slice(1000, 300), truth[1000:1300]),
        "test": (x.slice(1300), truth[1300:]),
    }


def _fit(family: type, data: dict[str, Any], params: dict[str, Any], checkpoint: Checkpointer | None) -> Any:
    (x, y), (xv, yv) = data["train"], data["valid"]
    return family.fit(x, y, xv, yv, classes=CLASSES, params=params, seed=3, metric="roc_auc", checkpoint=checkpoint)


def _auc(model: Any, data: dict[str, Any]) -> float:
    x, y = data["test"]
    return binary_metrics(y, model.predict_proba(x)[:, 1])["roc_auc"]


def _every(n: int) -> Window:
    # max_fraction 1: every due step saves, however cheap a round of these tiny tables is
    return Window(every=n, seconds=3600, max_fraction=1.0)


def test_xgboost_resumes_after_a_kill_with_the_same_model(data, tmp_path: Path, capfd) -> None:
    from jobs.families.xgboost_family import XGBoostFamily

    whole = _fit(XGBoostFamily, data, XGB, None)
    best, rounds = whole.meta["best_iteration"], whole.meta["params"]["n_estimators"]
    assert best + XGB["early_stopping_rounds"] < rounds  # early stopping ended it: its state matters
    prefix = (tmp_path / "model").as_uri() + "/"
    # Killed 3 rounds after the best one: the resumed run must count those 3 rounds without
    # improvement, or it would stop later than the uninterrupted run (a different model).
    kill_at = best + 1 + 3
    with pytest.raises(Interrupted):
        _fit(XGBoostFamily, data, XGB, Dying(prefix, IDENTITY, "fp", _every(1), after=kill_at))
    assert (tmp_path / "model" / "checkpoint" / "checkpoint.bin").exists()
    capfd.readouterr()

    again = Checkpointer(prefix, IDENTITY, "fp", _every(1))
    resumed = _fit(XGBoostFamily, data, XGB, again)
    log = capfd.readouterr().err
    assert f"resuming from checkpoint at round {kill_at} of {rounds} (written 20" in log
    assert again.resumed_from == kill_at
    # It ran only the rounds after the checkpoint: at most the patience left, as saves show.
    assert again.saves <= XGB["early_stopping_rounds"] - 3
    assert resumed.meta["best_iteration"] == best and resumed.meta["num_boosted_rounds"] == best + 1
    x_test = data["test"][0]
    assert np.abs(resumed.predict_proba(x_test) - whole.predict_proba(x_test)).max() <= 1e-6
    assert _auc(resumed, data) == pytest.approx(_auc(whole, data), abs=1e-6)


def test_xgboost_with_sampling_resumes_to_a_model_as_good(data, tmp_path: Path) -> None:
    from jobs.families.xgboost_family import XGBoostFamily

    params = {**XGB, "subsample": 0.8, "colsample_bytree": 0.8, "early_stopping_rounds": 50}
    whole = _fit(XGBoostFamily, data, params, None)
    prefix = (tmp_path / "model").as_uri() + "/"
    with pytest.raises(Interrupted):
        _fit(XGBoostFamily, data, params, Dying(prefix, IDENTITY, "fp", _every(10), after=20))
    resumed = _fit(XGBoostFamily, data, params, again := Checkpointer(prefix, IDENTITY, "fp", _every(10)))
    assert again.resumed_from == 20
    # Other random draws after round 20, so not the same bits; the same quality within noise.
    assert _auc(resumed, data) == pytest.approx(_auc(whole, data), abs=0.02)


@pytest.fixture(scope="module")
def whole_mlp(data) -> Any:
    from jobs.families.torch_mlp import TorchMLPFamily

    return _fit(TorchMLPFamily, data, MLP, None)


# Killed at epoch 5 (the plateau's learning-rate cut comes after the resume: the restored
# early-stopping counters decide it) and at 13 (after the cut: the optimizers' restored
# learning rate carries it).
@pytest.mark.parametrize("kill_at", [5, 13])
def test_torch_mlp_resumes_after_a_kill_with_the_same_model(data, whole_mlp, kill_at, tmp_path, capfd) -> None:
    from jobs.families.torch_mlp import TorchMLPFamily

    whole = whole_mlp
    epochs = whole.meta["epochs_run"]
    assert epochs == 14 and [h["epoch"] for h in whole.meta["history"] if h["lr"] < MLP_LR] == [14]
    prefix = (tmp_path / "model").as_uri() + "/"
    with pytest.raises(Interrupted):
        _fit(TorchMLPFamily, data, MLP, Dying(prefix, IDENTITY, "fp", _every(1), after=kill_at))
    capfd.readouterr()

    resumed = _fit(TorchMLPFamily, data, MLP, again := Checkpointer(prefix, IDENTITY, "fp", _every(1)))
    log = capfd.readouterr().err
    assert f"resuming from checkpoint at epoch {kill_at} of 14 (written 20" in log
    trained = [line for line in log.splitlines() if line.startswith("train: epoch ")]
    assert trained[0].startswith(f"train: epoch {kill_at + 1}:") and len(trained) == epochs - kill_at  # the rest only
    # The whole history, learning-rate cuts and early stopping included, is the uninterrupted one.
    assert resumed.meta["history"] == whole.meta["history"]
    assert resumed.meta["best_iteration"] == whole.meta["best_iteration"]
    x_test = data["test"][0]
    assert np.abs(resumed.predict_proba(x_test) - whole.predict_proba(x_test)).max() <= 1e-4
    assert _auc(resumed, data) == pytest.approx(_auc(whole, data), abs=1e-4)
    assert again.resumed_from == kill_at


def test_torch_text_resumes_with_its_sparse_optimizer(tmp_path: Path) -> None:
    import pyarrow as pa

    from jobs.families.torch_text import TorchTextFamily

    rng = np.random.default_rng(2)
    words = np.array(["tea", "coffee", "latte", "bike", "car", "train"])
    y = rng.integers(0, 2, 600)
    text = [" ".join(words[rng.integers(0, 3, 3) + 3 * t]) for t in y]
    x = pa.table({"title": text, "n": rng.normal(size=600)})
    params = {"max_epochs": 6, "patience": 6, "buckets": 1024, "dim": 4, "hidden": 8, "batch_size": 64}

    def fit(checkpoint: Checkpointer | None) -> Any:
        return TorchTextFamily.fit(
            x.slice(0, 400), y[:400], x.slice(400, 100), y[400:500], classes=CLASSES, params=params, seed=1,
            metric="roc_auc", checkpoint=checkpoint,
        )  # fmt: skip

    whole = fit(None)
    prefix = (tmp_path / "model").as_uri() + "/"
    with pytest.raises(Interrupted):
        fit(Dying(prefix, IDENTITY, "fp", _every(1), after=3))
    resumed = fit(again := Checkpointer(prefix, IDENTITY, "fp", _every(1)))
    assert again.resumed_from == 3
    assert resumed.meta["history"] == whole.meta["history"]
    assert np.abs(resumed.predict_proba(x.slice(500)) - whole.predict_proba(x.slice(500))).max() <= 1e-4


def test_another_jobs_or_runs_checkpoint_is_never_resumed(data, tmp_path: Path, capfd) -> None:
    from jobs.families.xgboost_family import XGBoostFamily

    prefix = (tmp_path / "model").as_uri() + "/"
    with pytest.raises(Interrupted):
        _fit(XGBoostFamily, data, XGB, Dying(prefix, IDENTITY, "fp-a", _every(5), after=10))
    capfd.readouterr()
    other_data = Checkpointer(prefix, IDENTITY, "fp-b", _every(5))
    assert other_data.resume() is None
    assert "written for other params, data or code" in capfd.readouterr().err
    other_version = Checkpointer(prefix, {**IDENTITY, "version": "v2"}, "fp-a", _every(5))
    assert other_version.resume() is None
    assert "written by another job (version 'v1', this job's is 'v2'); starting fresh" in capfd.readouterr().err
    # And a fit with the mismatching checkpointer trains from round 0: the uninterrupted model.
    fresh = _fit(XGBoostFamily, data, XGB, other_data)
    assert other_data.resumed_from is None
    whole = _fit(XGBoostFamily, data, XGB, None)
    assert fresh.meta["num_boosted_rounds"] == whole.meta["num_boosted_rounds"]
    # Its own first save replaced the other run's checkpoint.
    assert Checkpointer(prefix, IDENTITY, "fp-b").resume() is not None


def test_unreadable_checkpoint_is_ignored_and_clear_removes_it(tmp_path: Path, capfd) -> None:
    prefix = (tmp_path / "model").as_uri() + "/"
    (tmp_path / "model" / "checkpoint").mkdir(parents=True)
    (tmp_path / "model" / "checkpoint" / "checkpoint.bin").write_bytes(b"half a file")
    c = Checkpointer(prefix, IDENTITY, "fp")
    assert c.resume() is None
    assert "unreadable" in capfd.readouterr().err
    c.save(3, 10, {"k": 1}, b"payload")
    header, payload = ck.decode((tmp_path / "model" / "checkpoint" / "checkpoint.bin").read_bytes())
    assert header["step"] == 3 and header["state"] == {"k": 1} and payload == b"payload"
    assert not [p for p in (tmp_path / "model" / "checkpoint").iterdir() if ".tmp-" in p.name]
    c.clear()
    assert not (tmp_path / "model" / "checkpoint").exists()


def test_window_is_due_by_steps_or_time_within_the_cost_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(ck.time, "monotonic", lambda: now[0])
    c = Checkpointer("file:///unused/", IDENTITY, "fp", Window(every=None, seconds=60, max_fraction=0.05))
    c.begin(0, default_every=10)
    assert not c.due(9) and c.due(10)
    c._last_step, c.save_seconds = 10, 1.0  # a save that took 1 s ...
    now[0] = 110.0
    assert not c.due(20)  # ... is more than 5 % of 10 s trained: the step rule waits
    now[0] = 120.0
    assert c.due(20)  # 1 s of 20 s
    c.begin(20, default_every=10)
    now[0] += 61
    assert c.due(21)  # a minute since the last: due whatever the steps
    assert not Checkpointer("file:///u/", IDENTITY, "fp", Window(enabled=False)).due(10**6)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Window()),
        (True, Window()),
        (False, Window(enabled=False)),
        ({"every": 5}, Window(every=5)),
        ({"seconds": 30, "max_fraction": 0.1}, Window(seconds=30.0, max_fraction=0.1)),
    ],
)
def test_window_parse(raw: Any, expected: Window) -> None:
    assert Window.parse(raw) == expected


@pytest.mark.parametrize("raw", ["yes", {"every": 0}, {"evry": 5}, {"seconds": -1}, {"max_fraction": True}])
def test_window_parse_rejects(raw: Any) -> None:
    with pytest.raises(JobInputError, match="params.checkpoint"):
        Window.parse(raw)


def test_the_train_jobs_fingerprint_follows_params_and_data_not_the_window() -> None:
    import pyarrow as pa

    from jobs.contract import TrainConfig
    from jobs.train import Matched, checkpointer

    raw = {"model": "m", "version": "v1", "entity_key": "k", "classes": CLASSES, "family": "xgboost"}
    manifest = {"entries": [{"url": "s3://b/unload/0000_part_00.parquet", "meta": {"record_count": 3}}]}
    data = Matched(pa.table({"x": [1.0, 2.0, 3.0]}), np.array([0, 1, 0]), 3)

    def fp(params: dict[str, Any], m: dict = manifest, d: Matched = data) -> str:
        cfg = TrainConfig.parse({**raw, "params": params})
        return checkpointer(cfg, m, "s3://b/labels.parquet", d, "s3://b/models/m/v1/").fingerprint

    base = fp({"max_depth": 4})
    assert fp({"max_depth": 4, "checkpoint": {"every": 5}}) == base  # the window is not the model
    assert fp({"max_depth": 5}) != base
    other_unload = {"entries": [{**manifest["entries"][0], "url": "s3://b/unload2/0000_part_00.parquet"}]}
    assert fp({"max_depth": 4}, m=other_unload) != base
    assert fp({"max_depth": 4}, d=Matched(data.x, np.array([0, 1, 1]), 3)) != base  # other labels
    with pytest.raises(JobInputError, match="params.checkpoint"):
        fp({"checkpoint": "often"})


def test_sigterm_during_training_checkpoints_at_once_and_a_rerun_resumes(tmp_path: Path) -> None:
    """ECS stops a task on a reclaimed Spot instance with SIGTERM (SIGKILL up to 2 min later):
    the job checkpoints at the next round's end, outside its window, and exits 143."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support.jobs import run_job, write_config, write_labels, write_unload
    from tests.support.paths import REPO

    table, truth = features_table(n=3000, seed=2)
    manifest = write_unload(table, tmp_path / "unload")
    labels = write_labels(tmp_path / "labels.parquet", np.arange(1000, 4000), [CLASSES[t] for t in truth])
    params = {**XGB, "n_estimators": 300, "early_stopping_rounds": 300, "learning_rate": 0.01, "max_depth": 6}
    config = write_config(tmp_path / "config.json", CLASSES, params={**params, "checkpoint": {"every": 10_000}})
    out = (tmp_path / "model").as_uri() + "/"
    args = ["--config", config, "--features", manifest, "--labels", labels, "--output", out]
    env = {**os.environ, "MLBATCH_CODE_VERSION": "test-sha", "MLBATCH_XGB_DEVICE": "cpu", "MLBATCH_JOB_VCPU": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # until boosting has begun
        lines.append(line)
        if "fitting xgboost" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    log = "".join(lines) + rest
    assert proc.returncode == 143, log
    assert "SIGTERM: stopping after the checkpoint at " in log
    assert (tmp_path / "model" / "checkpoint" / "checkpoint.bin").exists()
    assert not (tmp_path / "model" / "_SUCCESS").exists()

    again = run_job("train", *args, env={"MLBATCH_JOB_VCPU": "1"})
    assert again.returncode == 0, again.stderr
    assert "resuming from checkpoint at round " in again.stderr
    marker = json.loads((tmp_path / "model" / "_SUCCESS").read_text())
    assert 0 < marker["checkpoint"]["resumed_from"] < 300
    assert not (tmp_path / "model" / "checkpoint").exists()
