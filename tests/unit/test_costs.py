"""The cost line of a run (jobs' wall time x the spec's resources, bytes unloaded) and its month."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
from mlbatch.backends.env import Environment
from mlbatch.reporting import costs
from mlbatch.spec import load_spec
from mlbatch.stages.context import RunContext

from tests.support.specs import write_spec


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch) -> RunContext:
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())

    def sized(raw: dict) -> None:
        raw["train"]["resources"] = {"gpu": 1, "vcpu": 8, "memory_gib": 30}
        raw["score"] = {"shards": 2, "resources": {"vcpu": 4}}

    spec = load_spec(write_spec(tmp_path, sized))
    return RunContext(env=Environment.from_env(), spec=spec, ds="2026-11-22", run_id="r1")


def test_a_score_run_costs_its_shards_and_its_unload(ctx: RunContext) -> None:
    store = ctx.env.store
    ctx.save_state("model", {"version": "v1"})
    # The train DAG's run of the same date shares the state folder: its job is not this run's.
    ctx.save_state("train", {"artifact_uri": store.uri("models/device_gender/v1/")})
    store.put_json("models/device_gender/v1/_SUCCESS", {"seconds": 100.0})
    for shard, seconds in ((0, 10.0), (1, 20.0)):
        store.put_json(ctx.shard_key(shard) + "._SUCCESS", {"seconds": seconds})
    entries = [{"url": "x", "meta": {"content_length": n, "record_count": 1}} for n in (1_000, 2_500)]
    store.put_json(ctx.manifest_key("score"), {"entries": entries})
    cost = costs.record(ctx, "score", now=datetime(2026, 11, 22, 3))
    assert cost == {
        "job_seconds": 30.0,
        "job_vcpu_seconds": 120.0,  # 30 s x 4 vCPU
        "job_gpu_seconds": 0.0,
        "warehouse_seconds": None,
        "bytes_unloaded": 3_500,
        "rows_published": 0,
    }
    assert "vCPU 120 s, GPU 0 s, warehouse n/a, 0.0 MB unloaded" in costs.line(cost)


def test_a_train_run_costs_gpu_seconds_and_the_month_sums_runs(ctx: RunContext) -> None:
    store = ctx.env.store
    ctx.save_state("train", {"artifact_uri": store.uri("models/device_gender/v1/")})
    store.put_json("models/device_gender/v1/_SUCCESS", {"seconds": 100.0})
    store.put_json(ctx.state_key("statement__train_unload"), {"seconds": 7.5})
    store.put_json(ctx.state_key("statement__score_export"), {"seconds": 99.0})  # the score DAG's
    cost = costs.record(ctx, "train", now=datetime(2026, 11, 22))
    assert (cost["job_vcpu_seconds"], cost["job_gpu_seconds"], cost["warehouse_seconds"]) == (800.0, 100.0, 7.5)
    again = costs.record(ctx, "train", now=datetime(2026, 11, 23))  # a rerun replaces its own line
    assert again == cost
    other = RunContext(env=ctx.env, spec=ctx.spec, ds="2026-11-23", run_id="r2")
    other.save_state("train", {"artifact_uri": store.uri("models/device_gender/v1/")})
    costs.record(other, "train", now=datetime(2026, 11, 30))
    total = costs.month(store, "device_gender", "2026-11")
    assert total["runs"] == 2 and total["job_gpu_seconds"] == 200.0 and total["warehouse_seconds"] == 7.5
    assert total["latest_runs"]["train"]["run_id"] == "r2" and total["latest_runs"]["train"]["job_gpu_seconds"] == 100
    assert costs.month(store, "device_gender", "2026-12")["runs"] == 0


def test_an_unload_records_its_warehouse_seconds_for_the_cost_line(tmp_path: Path, monkeypatch) -> None:
    """The embedded warehouse's UNLOAD (the real step, on the synthetic warehouse) keeps its
    seconds in the run's state, and the run's cost line sums them."""
    from mlbatch.stages.features import Unload

    from devtools.synth import build_warehouse
    from tests.support.paths import REPO

    build_warehouse(tmp_path / "wh.duckdb", n_devices=2_000, ref_date=date(2026, 11, 22))
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_WAREHOUSE", f"duckdb://{tmp_path / 'wh.duckdb'}")
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    ctx = RunContext(env=Environment.from_env(), spec=spec, ds="2026-11-22", run_id="r1")
    result = Unload(ctx, "score").run()
    assert result["rows"] > 0
    recorded = ctx.env.store.get_json(ctx.state_key("statement__score_unload"))
    assert recorded["seconds"] > 0 and recorded["what"].startswith("UNLOAD into ")
    assert costs.run_cost(ctx, "score")["warehouse_seconds"] == recorded["seconds"]
    assert costs.run_cost(ctx, "train")["warehouse_seconds"] is None  # the score run's, not the train run's
