"""The features gate on real unloads (embedded warehouse, local object store): counts, nulls,
keys, the model's schema and drift (PSI per feature against the model's training data)."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from mlbatch.backends.env import Environment
from mlbatch.features import profile as profile_mod
from mlbatch.features.profile import BinCounter, build_profile
from mlbatch.features.reader import iter_batches
from mlbatch.maths import gates
from mlbatch.maths.drift import psi
from mlbatch.spec import FeatureChecks, load_spec
from mlbatch.stages import features
from mlbatch.stages.context import RunContext

from tests.support.paths import REPO

N = 5_000
ARTIFACT = "models/device_gender/v1/"


def _table(seed: int, shift: float = 0.0, n: int = N) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1.0, n)
    return pa.table(
        {
            "device_id": np.arange(n, dtype=np.int64),
            "x1": x1,
            "x2": rng.uniform(0, 1, n),
            "flag": rng.random(n) < 0.3,
            "name": [f"d{i}" for i in range(n)],
        }
    )


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    """A scoring run whose production model v1 was trained on ``train`` (seed 1, no shift)."""
    wh = tmp_path / "wh.duckdb"
    with duckdb.connect(str(wh)) as con:
        for name, t in {
            "train": _table(1),
            "same": _table(2),
            "mild": _table(3, shift=0.35),
            "shifted": _table(4, shift=1.0),
        }.items():
            con.register("src", t)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM src")
            con.unregister("src")
    env = Environment(
        home=tmp_path,
        appdb_url=f"sqlite:///{tmp_path / 'app.db'}",
        object_store=(tmp_path / "objects").as_uri(),
        warehouse_url=f"duckdb://{wh}",
        launcher_kind="local",
        specs_dir=REPO / "dags/specs",
    )
    spec = load_spec(REPO / "dags/specs/device_gender.yaml")
    spec = spec.model_copy(
        update={"features": spec.features.model_copy(update={"checks": FeatureChecks(min_rows=1000)})}
    )
    run = RunContext(env, spec, "2026-11-22", "test-run")
    store = env.store
    train_uri = env.warehouse.unload("SELECT * FROM train", store, "unload/device_gender/train/2026-11-01/r/")
    store.put_json(ARTIFACT + "lineage.json", {"features_manifest": train_uri})
    store.put_json(ARTIFACT + "feature_schema.json", [{"name": c} for c in ("x1", "x2", "flag", "name")])
    run.save_state("model", {"version": "v1", "artifact_uri": store.uri(ARTIFACT)})
    return run


def _score(ctx: RunContext, table: str) -> dict:
    ctx.env.store.delete_prefix(ctx.unload_prefix("score"))
    ctx.env.warehouse.unload(f"SELECT * FROM {table}", ctx.env.store, ctx.unload_prefix("score"))
    return features.features_gate(ctx, "score")


def test_unshifted_day_passes_and_the_profile_is_stored_once(ctx: RunContext, monkeypatch) -> None:
    result = _score(ctx, "same")
    assert result["rows"] == N
    stored = ctx.env.store.get_json(ARTIFACT + "feature_profile.json")
    assert stored["rows"] == N and sorted(stored["features"]) == ["flag", "x1", "x2"]  # numeric only, no key
    assert len(stored["features"]["x1"]["cuts"]) == 9 and stored["features"]["flag"]["cuts"] == [0.0, 1.0]
    # The next scoring run reads the stored profile instead of profiling the training data again.
    monkeypatch.setattr(features, "build_profile", lambda *a, **k: pytest.fail("profiled twice"))
    assert _score(ctx, "same")["rows"] == N


def test_shifted_day_fails_naming_the_column_and_its_psi(ctx: RunContext) -> None:
    with pytest.raises(gates.GateFailed) as info:
        _score(ctx, "shifted")
    failed = {c.name: c for c in info.value.checks if not c.ok}
    assert list(failed) == ["psi[x1]"]
    assert failed["psi[x1]"].observed > 0.25
    assert f"FAIL psi[x1]: observed {failed['psi[x1]'].observed:.4g}, threshold <= 0.25" in str(info.value)
    assert "training data of v1" in str(info.value)
    # A blocked day still keeps what it measured: the summary and on_drift read it.
    kept = ctx.load_state(features.FEATURE_DRIFT_STATE, "the gate keeps it")
    assert kept["max"] == {"feature": "x1", "psi": round(failed["psi[x1]"].observed, 6)}
    assert kept["model_version"] == "v1" and sorted(kept["psi"]) == ["flag", "x1", "x2"]
    assert max(kept["psi"]["flag"], kept["psi"]["x2"]) < 0.1


def test_mild_shift_warns_and_passes(ctx: RunContext, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlbatch.stages.features"):
        _score(ctx, "mild")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "feature x1 drifted: PSI" in warning and "above psi_warn 0.1" in warning


def test_psi_thresholds_are_checked_in_the_spec() -> None:
    with pytest.raises(ValueError, match=r"psi_warn \(0.3\) must not exceed psi_fail \(0.2\)"):
        FeatureChecks(psi_warn=0.3, psi_fail=0.2)


def test_psi_values() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) + (-0.4) * np.log(0.2), rel=1e-9)
    assert psi([1.0, 0.0], [0.0, 1.0]) < 20  # empty bins are floored, not infinite
    with pytest.raises(ValueError, match="same bins"):
        psi([1.0], [0.5, 0.5])


def test_profile_from_a_sample_counts_every_row_into_fixed_bins(ctx: RunContext, tmp_path: Path) -> None:
    uri = ctx.env.warehouse.unload("SELECT * FROM train", ctx.env.store, "u/")
    full = build_profile(uri, exclude=["device_id"], sample_rows=N)
    sampled = build_profile(uri, exclude=["device_id"], sample_rows=500)  # cuts from ~10% of rows
    assert full["rows"] == sampled["rows"] == N
    props = full["features"]["x1"]["proportions"]
    assert len(props) == 11 and props[-1] == 0.0  # 10 value bins, then the null bin
    assert all(abs(p - 0.1) < 0.002 for p in props[:-1])  # deciles of the data itself
    assert abs(sum(sampled["features"]["x1"]["proportions"]) - 1) < 1e-9
    assert all(abs(p - 0.1) < 0.05 for p in sampled["features"]["x1"]["proportions"][:-1])
    # Nulls land in the last bin.
    counter = BinCounter({"x": [0.5]})
    counter.add(pa.record_batch({"x": pa.array([0.1, None, 0.7, 0.9])}))
    assert counter.proportions("x") == [0.25, 0.5, 0.25]
    assert profile_mod.numeric_columns(next(iter_batches(uri)).schema, ["device_id"]) == ["x1", "x2", "flag"]


def test_duplicate_and_null_keys_and_min_rows_block(ctx: RunContext) -> None:
    store = ctx.env.store
    ctx.env.warehouse.unload(
        "SELECT * FROM train UNION ALL SELECT * FROM train WHERE device_id < 3 "
        "UNION ALL SELECT NULL, x1, x2, flag, name FROM train WHERE device_id = 9",
        store,
        ctx.unload_prefix("train"),
    )
    with pytest.raises(gates.GateFailed) as info:
        features.features_gate(ctx, "train")
    failed = {c.name: c.observed for c in info.value.checks if not c.ok}
    assert failed == {"null_keys": 1, "duplicate_keys": 3}
