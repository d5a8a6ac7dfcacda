"""The GPU pool's size follows the largest GPU job, training or scoring."""

import pytest
from mlbatch.airflow.pools import SLOTS_ENV, gpu_pool_slots

from tests.support.specs import write_spec


def test_pool_size_is_the_largest_gpu_job_of_train_or_score(tmp_path, monkeypatch):
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    write_spec(tmp_path, lambda r: (r["train"].update(resources={"gpu": 1}), r["score"].update(resources={"gpu": 2})))
    assert gpu_pool_slots(tmp_path) == 2
    monkeypatch.setenv(SLOTS_ENV, "1")
    with pytest.raises(ValueError, match="below the largest GPU job \\(2 GPUs"):
        gpu_pool_slots(tmp_path)


def test_cpu_only_specs_still_get_a_one_slot_pool(tmp_path, monkeypatch):
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    write_spec(tmp_path, lambda r: r["train"].update(resources={"gpu": 0}))
    assert gpu_pool_slots(tmp_path) == 1


def test_every_pool_is_sized_in_one_place_and_env_overrides(tmp_path, monkeypatch):
    from mlbatch.airflow.pools import APPDB_POOL, GPU_POOL, HEAVY_POOL, WAREHOUSE_POOL, pool_sizes, pools_set_command

    monkeypatch.delenv(SLOTS_ENV, raising=False)
    write_spec(tmp_path, lambda r: None)
    assert pool_sizes(tmp_path) == {GPU_POOL: 1, WAREHOUSE_POOL: 4, APPDB_POOL: 2, HEAVY_POOL: 4}
    monkeypatch.setenv("MLBATCH_WAREHOUSE_POOL_SLOTS", "8")
    assert pool_sizes(tmp_path)[WAREHOUSE_POOL] == 8
    monkeypatch.setenv("MLBATCH_APPDB_POOL_SLOTS", "0")
    with pytest.raises(ValueError, match="MLBATCH_APPDB_POOL_SLOTS=0 is below 1"):
        pool_sizes(tmp_path)
    assert pools_set_command(8, WAREHOUSE_POOL)[5:7] == [WAREHOUSE_POOL, "8"]
    # A deferred ECS job or Redshift statement still runs: its pool must count it.
    assert pools_set_command(8, WAREHOUSE_POOL)[-1] == pools_set_command(1, GPU_POOL)[-1] == "--include-deferred"
    assert "--include-deferred" not in pools_set_command(2, APPDB_POOL)


def test_the_rest_upsert_is_what_airflow_s_bulk_pools_endpoint_takes(tmp_path, monkeypatch):
    """The body deploy/mwaa/create-pools.sh sends: validated by the API server's own request model."""
    from airflow.api_fastapi.core_api.datamodels.common import BulkBody
    from airflow.api_fastapi.core_api.datamodels.pools import PoolBody
    from mlbatch.airflow.pools import rest_upsert

    monkeypatch.delenv(SLOTS_ENV, raising=False)
    monkeypatch.setenv("MLBATCH_HEAVY_POOL_SLOTS", "3")
    write_spec(tmp_path, lambda r: r["train"].update(resources={"gpu": 2}))
    body = BulkBody[PoolBody].model_validate(rest_upsert(tmp_path))
    (action,) = body.actions
    assert action.action_on_existence.value == "overwrite"
    assert {(e.pool, e.slots, e.include_deferred) for e in action.entities} == {
        ("mlbatch_gpu", 2, True),
        ("mlbatch_warehouse", 4, True),
        ("mlbatch_appdb", 2, False),
        ("mlbatch_heavy", 3, False),
    }


def test_schedules_spread_by_a_stable_per_model_offset():
    from mlbatch.airflow.pools import offset_minutes, spread

    offsets = {f"model_{i}": offset_minutes(f"model_{i}", 60) for i in range(20)}
    assert offsets == {m: offset_minutes(m, 60) for m in offsets}  # stable
    assert all(0 <= o < 60 for o in offsets.values()) and len(set(offsets.values())) > 10  # spread
    assert offset_minutes("device_gender", 0) == 0 and spread("0 0 * * *", "device_gender", 0) == "0 0 * * *"
    o = offset_minutes("device_gender", 180)
    assert spread("0 0 * * *", "device_gender", 180) == f"{o % 60} {o // 60} * * *"
    assert spread("0 * * * *", "device_gender", 180) == f"{o % 60} * * * *"  # hourly: within the hour
    assert spread("0 23 * * *", "device_gender", 1440).split()[1] in {"23"}  # never past midnight
    assert spread("*/5 * * * *", "device_gender", 180) == "*/5 * * * *"  # written by hand: left alone


def test_dags_use_the_shared_pools_unless_told_gpu_only(tmp_path, monkeypatch):
    from mlbatch.airflow.dag_factory import labels_dag, score_dag, train_dag
    from mlbatch.spec import load_spec

    spec = load_spec(write_spec(tmp_path, lambda r: r["train"].update(resources={"gpu": 1})))
    monkeypatch.setenv("MLBATCH_POOLS", "gpu")
    assert score_dag(spec).get_task("publish").pool == "default_pool"
    monkeypatch.delenv("MLBATCH_POOLS", raising=False)  # the default: every pool
    score, train = score_dag(spec), train_dag(spec)
    pools = {t.task_id: (t.pool, t.pool_slots) for t in [*score.tasks, *train.tasks]}
    assert pools["unload_scoring"] == pools["export"] == pools["unload_training"] == ("mlbatch_warehouse", 1)
    assert pools["publish"] == ("mlbatch_appdb", 1) and pools["predictions_gate"] == ("mlbatch_heavy", 1)
    assert pools["features_gate"] == ("mlbatch_heavy", 1) and pools["train"] == ("mlbatch_gpu", 1)
    assert pools["score"][0] == "default_pool"  # a CPU job waits for no pool
    assert labels_dag(spec).get_task("realized_performance").pool == "mlbatch_heavy"
    # An analyst waits for a label sync: its tasks go ahead of a fleet's queued score and train tasks.
    assert {t.priority_weight for t in labels_dag(spec).tasks} == {10}
    assert {t.priority_weight for t in [*score.tasks, *train.tasks]} == {1}
    monkeypatch.setenv("MLBATCH_SCHEDULE_WINDOW_MINUTES", "120")
    from mlbatch.airflow.pools import offset_minutes

    o = offset_minutes(spec.name, 120)
    assert f"{o % 60} {o // 60} * * *" in score_dag(spec).doc_md  # the cron the doc names is the timetable's
