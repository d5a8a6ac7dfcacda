"""The model gate on real training results: a model trained on shuffled labels is rejected and
production stays as it was (the train job runs in-process here to keep the test quick)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlbatch import names
from mlbatch.backends.env import Environment
from mlbatch.maths.gates import GateFailed
from mlbatch.spec import load_spec
from mlbatch.stages import registry
from mlbatch.stages import train as train_stage
from mlbatch.stages.context import RunContext

from jobs.train import train
from tests.support.jobs import features_table, write_config, write_labels, write_unload
from tests.support.paths import REPO


def _train_version(ctx: RunContext, tmp: Path, version: str, labels: list[str]) -> None:
    """Train through the job into the store's models/ prefix and record it as this run's version."""
    table, _ = features_table(n=3000, seed=0)
    manifest = write_unload(table, tmp / "unload")
    keys = table.column("device_id").to_numpy()
    labels_uri = write_labels(tmp / f"labels-{version}.parquet", keys, labels)
    config = write_config(tmp / f"config-{version}.json", ["female", "male"], version=version)
    out = ctx.env.store.uri(names.model_prefix(ctx.model, version))
    train(config, manifest, labels_uri, out)
    ctx.save_state("train", {"version": version, "artifact_uri": out, "reused": False})
    train_stage.register(ctx)


def test_model_trained_on_shuffled_labels_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_XGB_DEVICE", "cpu")
    for var in ("MLBATCH_APPDB_URL", "MLBATCH_OBJECT_STORE", "MLBATCH_SPECS_DIR"):
        monkeypatch.delenv(var, raising=False)
    env = Environment.from_env()
    ctx = RunContext(env=env, spec=load_spec(REPO / "dags/specs/device_gender.yaml"), ds="2026-11-22", run_id="t")
    _, truth = features_table(n=3000, seed=0)
    true_labels = [["female", "male"][t] for t in truth]

    _train_version(ctx, tmp_path, "good", true_labels)
    assert train_stage.model_gate(ctx)["promoted"] is True
    good = registry.production(env.appdb, "device_gender")
    assert good.version == "good" and good.value > 0.75

    shuffled = list(np.random.default_rng(1).permutation(true_labels))
    _train_version(ctx, tmp_path, "shuffled", shuffled)
    metrics = json.loads((tmp_path / "home/objects/models/device_gender/shuffled/metrics.json").read_text())
    assert 0.4 < metrics["roc_auc"] < 0.6  # no signal left: the job really trained on noise
    with pytest.raises(GateFailed, match=r"roc_auc"):
        train_stage.model_gate(ctx)

    versions = {v.version: v for v in registry.versions(env.appdb, "device_gender")}
    assert versions["shuffled"].status == "rejected" and "0.75" in versions["shuffled"].reason
    assert versions["good"].status == "production"
    after = registry.production(env.appdb, "device_gender")
    assert (after.version, after.decided_at, after.reason) == (good.version, good.decided_at, good.reason)
