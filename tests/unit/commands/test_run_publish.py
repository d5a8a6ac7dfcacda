"""``mlbatch run MODEL --ds D --stage publish`` on a day another run scored: it finds that run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlbatch.backends.env import Environment
from mlbatch.reporting.runs import NoScoredRun, publishing_context, scored_run
from mlbatch.spec import load_spec
from mlbatch.stages.context import RunContext

from tests.support.paths import REPO

DS = "2026-11-22"


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> Environment:
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    return Environment.from_env()


def _ctx(env: Environment, run_id: str) -> RunContext:
    return RunContext(env=env, spec=load_spec(REPO / "dags" / "specs" / "device_gender.yaml"), ds=DS, run_id=run_id)


def _scored(env: Environment, run_id: str) -> None:
    ctx = _ctx(env, run_id)
    ctx.save_state("model", {"version": "v1", "artifact_uri": "file:///m/"})
    ctx.save_state("prediction_profile", {"rows": 3})


def test_the_cli_publishes_the_day_the_score_dag_scored(env: Environment) -> None:
    _scored(env, "scheduled__2026-11-22T00:00:00+00:00")
    _ctx(env, "manual__2026-11-22T05:00:00+00:00").save_state("model", {"version": "v1"})  # gate never passed
    cli = _ctx(env, f"cli__{DS}")
    assert scored_run(cli) == "scheduled__2026-11-22T00:00:00+00:00"
    found, run_id = publishing_context(cli, ["publish", "export"])
    assert run_id == "scheduled__2026-11-22T00:00:00+00:00" and found.run_key != cli.run_key
    assert found.load_state("model", "")["version"] == "v1"


def test_a_run_that_scores_or_resolved_its_model_publishes_its_own(env: Environment) -> None:
    _scored(env, "scheduled__2026-11-22T00:00:00+00:00")
    cli = _ctx(env, f"cli__{DS}")
    assert publishing_context(cli, ["score", "publish"]) == (cli, None)
    assert publishing_context(cli, ["labels"]) == (cli, None)
    _scored(env, f"cli__{DS}")
    assert publishing_context(cli, ["publish"]) == (cli, None)


def test_no_scored_run_or_several_say_what_to_do(env: Environment) -> None:
    cli = _ctx(env, f"cli__{DS}")
    with pytest.raises(NoScoredRun, match="no run scored the day .*run --stage score first"):
        scored_run(cli)
    _scored(env, "a")
    _scored(env, "b")
    with pytest.raises(NoScoredRun, match="several runs scored the day .*--run-id"):
        scored_run(cli)
