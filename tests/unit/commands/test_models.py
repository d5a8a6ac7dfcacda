"""``mlbatch models list|promote|rollback`` against the embedded app DB (SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.cli.app import app
from mlbatch.stages import registry
from typer.testing import CliRunner


def _add(db: AppDbHook, version: str, value: float) -> None:
    registry.register(
        db,
        {
            "model": "device_gender",
            "version": version,
            "family": "xgboost",
            "metric": "roc_auc",
            "value": value,
            "metrics": {"roc_auc": value},
            "artifact_uri": f"file:///models/device_gender/{version}/",
            "lineage": {"label_sync_id": 1},
        },
    )


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path))
    monkeypatch.setenv("MLBATCH_USER", "alice")
    for var in ("MLBATCH_APPDB_URL", "MLBATCH_SPECS_DIR"):
        monkeypatch.delenv(var, raising=False)
    db = AppDbHook(f"sqlite:///{tmp_path / 'app.db'}")
    db.ensure_schema()
    _add(db, "v1", 0.84)
    _add(db, "v2", 0.61)
    _add(db, "v3", 0.85)
    registry.decide(db, "device_gender", "v1", "production", "gate passed")
    registry.decide(db, "device_gender", "v2", "rejected", "roc_auc 0.61 < 0.75")
    return {"db": db}


def _statuses(db: AppDbHook) -> dict[str, str]:
    return {v.version: v.status for v in registry.versions(db, "device_gender")}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_list_json_and_table(home: dict) -> None:
    result = _invoke("models", "list", "device_gender", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "device_gender"
    rows = {r["version"]: r for r in report["versions"]}
    assert [r["version"] for r in report["versions"]] == ["v1", "v2", "v3"]
    assert rows["v1"]["status"] == "production" and rows["v1"]["metric"] == "roc_auc" and rows["v1"]["value"] == 0.84
    assert rows["v2"]["reason"] == "roc_auc 0.61 < 0.75" and rows["v2"]["decided_at"].endswith("Z")
    assert rows["v3"]["status"] == "candidate" and rows["v3"]["decided_at"] is None

    result = _invoke("models", "list", "device_gender")
    assert result.exit_code == 0 and "v3" in result.stdout and "rejected" in result.stdout


def test_promote_checks_then_swaps_in_one_step(home: dict) -> None:
    db = home["db"]
    result = _invoke("models", "promote", "device_gender", "v9", "--reason", "x")
    assert result.exit_code == 2 and "device_gender has no version 'v9'" in result.output
    result = _invoke("models", "promote", "device_gender", "v3")
    assert result.exit_code == 2 and "--reason" in result.output  # required
    result = _invoke("models", "promote", "device_gender", "v2", "--reason", "looks fine to me")
    assert result.exit_code == 2 and "was rejected by the model gate" in result.output and "--force" in result.output
    assert _statuses(db) == {"v1": "production", "v2": "rejected", "v3": "candidate"}

    result = _invoke("models", "promote", "device_gender", "v3", "--reason", "new features reviewed")
    assert result.exit_code == 0, result.output
    assert _statuses(db) == {"v1": "retired", "v2": "rejected", "v3": "production"}
    with db.connect() as conn:
        v3 = registry.get(conn, "device_gender", "v3")
    assert v3.reason == "manual promotion by alice: new features reviewed" and v3.decided_at is not None

    result = _invoke("models", "promote", "device_gender", "v2", "--reason", "A/B test arm", "--force")
    assert result.exit_code == 0, result.output
    assert _statuses(db) == {"v1": "retired", "v2": "production", "v3": "retired"}
    assert "forced over the gate's rejection" in registry.production(db, "device_gender").reason


def test_rollback_repromotes_the_latest_retired(home: dict) -> None:
    db = home["db"]
    result = _invoke("models", "rollback", "device_gender")
    assert result.exit_code == 2 and "no retired version to roll back to" in result.output

    registry.decide(db, "device_gender", "v3", "production", "gate passed")  # v1 retired
    result = _invoke("models", "rollback", "device_gender", "--reason", "v3 skews young")
    assert result.exit_code == 0, result.output
    assert "rolled back to v1 (was v3)" in result.output
    assert _statuses(db) == {"v1": "production", "v2": "rejected", "v3": "retired"}
    assert registry.production(db, "device_gender").reason == "rollback by alice from v3: v3 skews young"


def test_unknown_spec_is_a_usage_error(home: dict) -> None:
    result = _invoke("models", "list", "no_such_model")
    assert result.exit_code == 2 and "no_such_model" in result.output


def test_approve_and_reject_decide_a_version_waiting_for_approval(home: dict) -> None:
    db = home["db"]
    registry.decide(db, "device_gender", "v3", "pending_approval", "roc_auc 0.85 >= 0.75; waiting for approval")
    _add(db, "v4", 0.86)
    registry.decide(db, "device_gender", "v4", "pending_approval", "waiting for approval")

    result = _invoke("models", "approve", "device_gender", "v2")
    assert result.exit_code == 2 and "v2 is not waiting for approval: it is rejected" in result.output

    result = _invoke("models", "reject", "device_gender", "v4", "--comment", "segment B looks off")
    assert result.exit_code == 0, result.output
    assert _statuses(db)["v4"] == "rejected" and _statuses(db)["v1"] == "production"  # the champion stays

    result = _invoke("models", "approve", "device_gender", "v3", "--comment", "reviewed the report")
    assert result.exit_code == 0, result.output
    assert _statuses(db) == {"v1": "retired", "v2": "rejected", "v3": "production", "v4": "rejected"}
    rows = {
        r["version"]: r for r in json.loads(_invoke("models", "list", "device_gender", "--json").stdout)["versions"]
    }
    assert rows["v3"]["reason"] == "approved by alice: reviewed the report" and rows["v3"]["decided_at"]
    assert rows["v4"]["reason"] == "rejected by alice: segment B looks off"

    result = _invoke("models", "reject", "device_gender", "v3")  # the first decision stands
    assert result.exit_code == 2 and "is not waiting for approval: it is production" in result.output
    assert _statuses(db)["v3"] == "production"


def test_no_answer_in_time_rejects_and_keeps_the_champion(home: dict) -> None:
    db = home["db"]
    registry.decide(db, "device_gender", "v3", "pending_approval", "waiting for approval")
    mv = registry.decide_approval(db, "device_gender", "v3", approved=False, by="unknown", timed_out=True)
    assert mv.status == "rejected" and mv.reason.startswith("no answer within the approval timeout")
    assert _statuses(db)["v1"] == "production"
