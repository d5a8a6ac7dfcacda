"""A person's approval of a promotion: what the question shows, what each answer does to the
registry, and the train DAG's shape with ``train.approval.required``. (The UI flow itself, a real
click on Approve and Reject, is in tests/integration/airflow/test_distributed_stack.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlbatch.airflow import approval
from mlbatch.airflow.approval import PromotionApprovalOperator
from mlbatch.backends.env import Environment
from mlbatch.spec import load_spec
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.train import approval_request

from tests.support.paths import REPO

MODEL = "device_gender"


def _spec(tmp_path: Path, required: bool) -> Path:
    spec = yaml.safe_load((REPO / "dags" / "specs" / f"{MODEL}.yaml").read_text())
    spec["train"]["approval"] = {"required": required, "timeout_hours": 48}
    for query in ("training_sql", "scoring_sql"):
        spec["features"][query] = str(REPO / spec["features"][query])
    path = tmp_path / f"{MODEL}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _register(db: Any, version: str, auc: float, status: str) -> None:
    registry.register(
        db,
        {
            "model": MODEL,
            "version": version,
            "family": "xgboost",
            "metric": "roc_auc",
            "value": auc,
            "metrics": {"roc_auc": auc, "log_loss": 0.5, "rows_train": 8000},
            "artifact_uri": f"file:///models/{MODEL}/{version}/",
            "lineage": {"label_sync_id": f"sync-{version}"},
        },
    )
    registry.decide(db, MODEL, version, status, "gate passed" if status != "pending_approval" else "waiting")


@pytest.fixture()
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    for var in ("MLBATCH_APPDB_URL", "MLBATCH_OBJECT_STORE"):
        monkeypatch.delenv(var, raising=False)
    env = Environment.from_env()
    env.appdb.ensure_schema()
    run = RunContext(env=env, spec=load_spec(_spec(tmp_path, True)), ds="2026-12-02", run_id="asset_triggered__x")
    _register(env.appdb, "v1", 0.80, "production")
    _register(env.appdb, "v2", 0.83, "pending_approval")
    run.save_state("train", {"version": "v2", "artifact_uri": f"file:///models/{MODEL}/v2/", "reused": False})
    monkeypatch.setattr(approval, "run_context", lambda spec_path, context: run)
    return run


def _statuses(ctx: RunContext) -> dict[str, str]:
    return {v.version: v.status for v in registry.versions(ctx.env.appdb, MODEL)}


def _operator() -> PromotionApprovalOperator:
    return PromotionApprovalOperator(task_id="approve_promotion", spec_path="x", response_timeout=timedelta(hours=48))


def _answer(option: str, user: dict[str, str] | None, comment: str = "", timedout: bool = False) -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {"comment": comment},
        "responded_at": datetime(2026, 12, 3, 8, tzinfo=UTC),
        "responded_by_user": user,
        "timedout": timedout,
    }


def test_the_question_compares_the_candidate_with_production(ctx: RunContext) -> None:
    asked = approval_request(ctx, "https://reports.example/v2/report.html")
    assert asked["version"] == "v2"
    assert asked["subject"] == f"Promote {MODEL} v2? roc_auc 0.8300 vs production 0.8000"
    body = asked["body"]
    assert "| **roc_auc** (gate) | 0.8300 | 0.8000 |" in body
    assert "| rows_train | 8000 | 8000 |" in body and "| log_loss | 0.5000 | 0.5000 |" in body
    assert "label sync: `sync-v2`" in body and "[report.html](https://reports.example/v2/report.html)" in body
    assert "No answer within 48 h rejects it." in body


def test_approve_promotes_and_records_who_and_why(ctx: RunContext) -> None:
    result = _operator().execute_complete({}, _answer("Approve", {"id": "7", "name": "alice"}, "report reviewed"))
    assert result["chosen_options"] == ["Approve"]
    assert _statuses(ctx) == {"v1": "retired", "v2": "production"}
    [v2] = [v for v in registry.versions(ctx.env.appdb, MODEL) if v.version == "v2"]
    assert v2.reason == "approved by alice: report reviewed" and v2.decided_at is not None


def test_reject_keeps_the_champion(ctx: RunContext) -> None:
    result = _operator().execute_complete({}, _answer("Reject", {"id": "8", "name": "bob"}, "segment B is off"))
    assert result["chosen_options"] == ["Reject"]
    assert _statuses(ctx) == {"v1": "production", "v2": "rejected"}


def test_no_answer_in_time_rejects(ctx: RunContext) -> None:
    _operator().execute_complete({}, _answer("Reject", None, timedout=True))  # the defaults, by the scheduler
    [v2] = [v for v in registry.versions(ctx.env.appdb, MODEL) if v.version == "v2"]
    assert v2.status == "rejected" and v2.reason.startswith("no answer within the approval timeout")


def test_a_decision_made_from_the_cli_first_stands(ctx: RunContext) -> None:
    registry.decide_approval(ctx.env.appdb, MODEL, "v2", approved=True, by="carol", comment="from the CLI")
    # Someone clicks Reject in the UI later: the registry's decision stands, downstream follows it.
    result = _operator().execute_complete({}, _answer("Reject", {"id": "8", "name": "bob"}))
    assert result["chosen_options"] == ["Approve"]
    assert _statuses(ctx)["v2"] == "production"


def test_nothing_is_asked_when_nothing_waits(ctx: RunContext) -> None:
    registry.decide_approval(ctx.env.appdb, MODEL, "v2", approved=False, by="carol")
    result = _operator().execute({"ti": None})
    assert result == {"version": "v2", "status": "rejected", "asked": False}


def test_the_train_dag_waits_for_a_person_only_when_the_spec_says_so(tmp_path: Path) -> None:
    from mlbatch.airflow.dag_factory import train_dag

    def shape(required: bool) -> dict[str, Any]:
        folder = tmp_path / str(required)
        folder.mkdir()
        dag = train_dag(load_spec(_spec(folder, required)))
        return {
            "tasks": sorted(dag.task_dict),
            "model_gate_outlets": [a.name for a in dag.task_dict["model_gate"].outlets],
            "downstream": sorted(dag.task_dict["model_gate"].downstream_task_ids),
            "form": sorted(dag.task_dict["approve_promotion"].serialized_params) if required else None,
        }

    off = shape(False)
    assert "approve_promotion" not in off["tasks"] and off["model_gate_outlets"] == [f"mlbatch.{MODEL}.model"]
    on = shape(True)
    assert {"approve_promotion", "announce_model"} <= set(on["tasks"])
    assert on["model_gate_outlets"] == [] and on["downstream"] == ["approve_promotion"]
    assert on["form"] == ["comment"]  # the run's params (force_retrain, ...) are not part of the question
