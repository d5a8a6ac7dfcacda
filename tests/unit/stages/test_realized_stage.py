"""The realized-performance wiring: spec defaults, metric choice, the labels DAG, the alert text."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlbatch.airflow.pipeline import cli_steps
from mlbatch.spec import ModelSpec, SpecError, load_spec
from mlbatch.stages import realized, realized_days

from tests.support.paths import REPO

SPECS = REPO / "dags" / "specs"


def _spec(tmp_path: Path, name: str = "device_gender", **changes: dict) -> ModelSpec:
    raw = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def test_existing_specs_get_the_monitoring_defaults() -> None:
    spec = load_spec(SPECS / "device_gender.yaml")
    m = spec.monitoring
    assert (m.lookback_days, m.min_rows, m.alert, m.retrain_on_degradation) == (30, 200, True, False)


def test_a_misspelled_monitoring_field_names_itself(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"monitoring.min_row: unknown field"):
        _spec(tmp_path, monitoring={"min_row": 5})
    with pytest.raises(SpecError, match=r"monitoring.lookback_days"):
        _spec(tmp_path, monitoring={"lookback_days": 0})


def test_the_metric_is_the_gate_s_where_published_rows_can_give_it(tmp_path: Path) -> None:
    assert realized.realized_metric(load_spec(SPECS / "device_gender.yaml")) == "roc_auc"
    assert realized.realized_metric(load_spec(SPECS / "recipe_category.yaml")) == "macro_f1"
    raw = yaml.safe_load((SPECS / "recipe_category.yaml").read_text())
    raw["train"]["gate"] = {"metric": "log_loss", "min": 0.9}  # needs every class's probability
    path = tmp_path / "recipe_category.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert realized.realized_metric(load_spec(path)) == "accuracy"


def test_labels_stage_measures_after_apply() -> None:
    assert [s.name for s in cli_steps(["labels"], shards=1)] == [
        "check_sheet",
        "labels_gate",
        "apply_labels",
        "decide_retrain",
        "realized_performance",
    ]


def test_labels_dag_keeps_its_order_and_adds_the_retrain_request_only_when_asked(tmp_path: Path) -> None:
    from mlbatch.airflow.dag_factory import labels_dag, train_dag

    dag = labels_dag(_spec(tmp_path))
    assert {t.task_id for t in dag.tasks} == {
        "check_sheet",
        "labels_gate",
        "apply_labels",
        "decide_retrain",
        "realized_performance",
        "retrain_needed",
        "announce_labels",
    }
    assert dag.get_task("realized_performance").upstream_task_ids == {"decide_retrain"}
    assert dag.get_task("retrain_needed").upstream_task_ids == {"decide_retrain"}

    on = _spec(tmp_path, monitoring={"retrain_on_degradation": True})
    dag = labels_dag(on)
    assert dag.get_task("degraded").upstream_task_ids == {"realized_performance"}
    [outlet] = dag.get_task("request_retrain").outlets
    assert outlet.name == "mlbatch.device_gender.retrain"
    train = train_dag(on)
    assert "mlbatch.device_gender.retrain" in str(train.timetable.asset_condition)
    assert "retrain" not in str(train_dag(_spec(tmp_path)).timetable.asset_condition)


def test_labelled_rows_leave_out_the_keys_the_version_trained_on(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    shards = []
    for i, (keys, labels_, scores) in enumerate(
        [([1, 2, 3], ["male", "female", "male"], [0.9, 0.2, 0.7]), ([4, 5], ["female", "male"], [0.4, 0.6])]
    ):
        path = tmp_path / f"part-{i}.parquet"
        table = pa.table({"entity_key": pa.array(keys, pa.int64()), "label": labels_, "score": scores})
        pq.write_table(table, path, row_group_size=2)  # batches within a file, and two files
        shards.append(path.as_uri())
    labels = {"1": "male", "2": "Male", "3": "female", "9": "male", "5": "female"}
    rows = realized_days.scan_day(spec, shards, labels, exclude={"1"})
    y, pred, score = realized_days.arrays(rows)
    assert rows.column("entity_key").to_pylist() == ["2", "3", "5"]
    # keys 2, 3 and 5 are late; 1 was trained on, 4 has no label, 9 was not scored
    assert y.tolist() == [1, 0, 0] and pred.tolist() == [0, 1, 1] and score.tolist() == [0.2, 0.7, 0.6]


def test_the_alert_names_model_version_days_metric_n_and_interval(tmp_path: Path, monkeypatch) -> None:
    spec = _spec(tmp_path)

    class _Conn:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    env = SimpleNamespace(appdb=SimpleNamespace(connect=lambda: _Conn()))
    monkeypatch.setattr(realized.registry, "get", lambda conn, m, v: SimpleNamespace(value=0.861))
    ctx = SimpleNamespace(spec=spec, env=env, dag_id="device_gender__labels", run_id="r1", ds="2026-11-24")
    row = {
        "ds": date(2026, 11, 22),
        "model_version": "20261122-abcd1234",
        "metric": "roc_auc",
        "value": 0.5312,
        "n_labelled": 6500,
        "ci_low": 0.516,
        "ci_high": 0.546,
    }
    msg = realized.degradation_message(ctx, [row])  # type: ignore[arg-type]
    assert msg["days"] == [
        {
            "ds": "2026-11-22",
            "model_version": "20261122-abcd1234",
            "metric": "roc_auc",
            "realized": 0.5312,
            "offline": 0.861,
            "n_labelled": 6500,
            "ci": [0.516, 0.546],
        }
    ]
    assert msg["text"] == (
        "mlbatch: device_gender version 20261122-abcd1234 degraded in production: realized roc_auc 0.531 "
        "(95% CI [0.516, 0.546], n=6,500) on 2026-11-22 vs offline 0.861, below the gate's 0.75; "
        "1 day(s): 2026-11-22"
    )
    assert msg["gate"] == {"metric": "roc_auc", "min": 0.75} and msg["kind"] == "realized_performance"


def test_a_retrain_request_trains_a_fresh_version_like_force_retrain(tmp_path: Path, monkeypatch) -> None:
    from mlbatch.backends.env import Environment
    from mlbatch.stages.context import RunContext
    from mlbatch.stages.train import _train_request

    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    env = Environment.from_env()
    spec = load_spec(SPECS / "device_gender.yaml")

    def version(run_id: str, **kw) -> str:
        ctx = RunContext(env=env, spec=spec, ds="2026-11-24", run_id=run_id, **kw)
        ctx.save_state("labels", {"sync_id": "s1", "uri": "file:///labels.parquet", "rows": 10})
        return _train_request(ctx)[1]

    plain = version("scheduled")
    assert version("another scheduled run") == plain  # same inputs, same version
    retrain = version("asset-run", triggered_by={"retrain": {"sync_id": "s1"}})
    forced = version("forced", params={"force_retrain": True})
    assert len({plain, retrain, forced}) == 3
