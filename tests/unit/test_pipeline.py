"""The pipeline declaration (mlbatch.airflow.pipeline) and the run params (mlbatch.spec.runparams): both
runners are built from them, a wrong step fails at import, the dry-run rule is one rule."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlbatch.airflow import pipeline
from mlbatch.airflow.pipeline import DagSteps, PipelineError, Step, cli_steps
from mlbatch.cli.app import app
from mlbatch.spec import runparams
from mlbatch.stages.external import ExternalWork
from typer.testing import CliRunner


def _declared() -> list[Step]:
    return [s for d in pipeline.DAGS.values() for s in d.steps]


def test_every_declared_call_imports_and_is_of_its_kind() -> None:
    """The parse-time check reads the stage modules' source; here every call is imported for real."""
    for step in _declared():
        if step.kind == "approval":
            assert step.call is None
            continue
        target = pipeline.resolve(step.call)
        args = [object(), *step.args] + ([0] if step.per_shard else [])
        if step.kind == "external":
            assert inspect.isclass(target) and issubclass(target, ExternalWork), step.name
        else:
            assert inspect.isfunction(target), step.name
        inspect.signature(target).bind(*args)  # takes (ctx, *args[, shard]) as declared


def test_a_step_naming_a_missing_callable_fails_naming_the_step() -> None:
    with pytest.raises(PipelineError, match=r"step 'check_sheet': call 'labels:check_shet' names nothing.*labels\.py"):
        Step("check_sheet", "stage", "doc", call="labels:check_shet")
    with pytest.raises(PipelineError, match="step 'x': call 'nowhere:f'"):
        Step("x", "stage", "doc", call="nowhere:f")
    with pytest.raises(PipelineError, match="step 'y': an approval has no call"):
        Step("y", "gate", "doc")


def test_every_declared_report_is_a_function_of_mlbatch_reports_taking_the_run_context() -> None:
    """REPORTS is checked without importing the reports; here each is imported for real."""
    from mlbatch.reporting import reports

    assert {s.report for s in _declared() if s.report} <= pipeline.REPORTS
    for name in pipeline.REPORTS:
        function = getattr(reports, name)
        assert inspect.isfunction(function), name
        inspect.signature(function).bind(object())  # takes (ctx)
        assert pipeline.resolve_report("any", name) is function


def test_a_step_naming_an_unknown_report_fails_naming_the_step_and_the_reports() -> None:
    with pytest.raises(PipelineError) as caught:
        Step("model_gate", "gate", "doc", call="train:model_gate", report="training_reprot")
    assert str(caught.value) == (
        "step 'model_gate': report 'training_reprot' is no run report of mlbatch.reporting.reports: "
        "one of realized_reports, scoring_summary, training_report"
    )
    with pytest.raises(PipelineError, match="step 'publish': report 'version_report' is no run report"):
        pipeline.resolve_report(
            "publish", "version_report"
        )  # a function of mlbatch.reporting.reports, but no run report


def test_a_report_on_a_step_that_writes_none_is_an_error() -> None:
    """Only a stage or gate task (StageOperator) writes its report: elsewhere it would never appear."""
    with pytest.raises(PipelineError, match="step 'export': report 'scoring_summary' on an external step"):
        Step("export", "external", "doc", call="publish:Export", report="scoring_summary")
    with pytest.raises(PipelineError, match="step 'score': report 'scoring_summary' on a per-shard external step"):
        Step("score", "external", "doc", call="score:ScoreShard", per_shard=True, report="scoring_summary")


def test_a_step_waits_for_the_one_before_it_or_for_those_it_names() -> None:
    def step(name: str, **kw: object) -> Step:
        return Step(name, "stage", "doc", call="publish:publish", **kw)  # type: ignore[arg-type]

    only_big = SimpleNamespace(big=False)
    dag = DagSteps(
        "score",
        "x",
        (
            step("a"),
            step("b", when=lambda spec: spec.big),
            step("c", after=("b",)),
            step("d", after=("a",)),
            step("e", after=("c", "d")),
        ),
    )
    # b is left out for this spec: c waits for what b waited for.
    assert dag.upstream(only_big) == {"a": (), "c": ("a",), "d": ("a",), "e": ("c", "d")}  # type: ignore[arg-type]
    assert dag.upstream(SimpleNamespace(big=True))["c"] == ("b",)  # type: ignore[arg-type]
    with pytest.raises(
        PipelineError, match=r"score DAG: step 'a' waits for \['z'\], which no step declared before it is"
    ):
        DagSteps("score", "x", (step("a", after=("z",)),))


def test_a_wrong_step_is_an_import_error_of_the_dag_file(tmp_path: Path) -> None:
    """Declared steps are checked when the declaration is imported: at DAG parse, not at run time."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "typo.py").write_text(
        textwrap.dedent("""
        \"\"\"An Airflow DAG file whose declared step names a function its stage module lacks.\"\"\"
        from mlbatch.airflow.pipeline import Step

        Step("apply_labels", "stage", "Apply.", call="labels:apply_label")
        """)
    )
    from airflow.dag_processing.dagbag import DagBag

    errors = DagBag(dag_folder=str(dags)).import_errors
    assert list(errors) == [str(dags / "typo.py")]
    assert "step 'apply_labels': call 'labels:apply_label' names nothing" in errors[str(dags / "typo.py")]


def test_mlbatch_run_walks_the_dags_in_order_with_cli_names() -> None:
    names = [s.name for s in cli_steps(pipeline.STAGES, shards=2)]
    assert names == [
        "check_sheet",
        "labels_gate",
        "apply_labels",
        "decide_retrain",
        "realized_performance",
        "unload_training",
        "features_gate[train]",
        "train",
        "register",
        "model_gate",
        "resolve_model",
        "unload_scoring",
        "features_gate[score]",
        "score[0]",
        "score[1]",
        "predictions_gate",
        "publish",
        "export",
        "export_gate",
    ]
    assert pipeline.STAGES == ("labels", "unload", "train", "score", "publish", "export")
    unload = list(cli_steps(["unload"], shards=2))
    assert [(s.name, s.args) for s in unload] == [
        ("unload_training", ("train",)),
        ("features_gate[train]", ("train",)),
        ("unload_scoring", ("score",)),
    ]
    assert [s.args for s in cli_steps(["score"], shards=3) if s.step.per_shard] == [(0,), (1,), (2,)]


def test_a_dry_run_skips_the_writers_and_what_follows_them_in_their_dag() -> None:
    assert pipeline.WRITERS == {
        "apply_labels",
        "realized_performance",
        "train",
        "register",
        "model_gate",
        "publish",
        "export",
    }
    skipped = {s.name for s in cli_steps(pipeline.STAGES, shards=1) if s.after_writer}
    # In Airflow the default trigger rule skips export_gate after the skipped export, and
    # decide_retrain after the skipped apply_labels; the CLI too.
    assert skipped == pipeline.WRITERS | {"export_gate", "decide_retrain"}
    assert runparams.skipped({"dry_run": True}, writes=True)
    assert not runparams.skipped({"dry_run": True}, writes=False)
    assert not runparams.skipped({}, writes=True)


def test_stages_steps_give_each_step_a_thunk_and_the_dry_run_verdict() -> None:
    from mlbatch.cli.steps import steps

    ctx = SimpleNamespace(spec=SimpleNamespace(score=SimpleNamespace(shards=2)), params={"dry_run": True})
    got = [(s.name, s.skipped) for s in steps(ctx, ["score", "publish", "export"])]
    assert got == [
        ("resolve_model", False),
        ("features_gate[score]", False),
        ("score[0]", False),
        ("score[1]", False),
        ("predictions_gate", False),
        ("publish", True),
        ("export", True),
        ("export_gate", True),
    ]
    assert all(callable(s.run) for s in steps(ctx, ["labels"]))


def test_run_params_parse_by_their_declared_type_and_name_the_item() -> None:
    assert runparams.parse(["dry_run=yes", "model_version=20261122-ab12cd34", "force_retrain=0"]) == {
        "dry_run": True,
        "model_version": "20261122-ab12cd34",
        "force_retrain": False,
    }
    with pytest.raises(ValueError, match=r"--param 'dry_run=maybe': dry_run takes true or false"):
        runparams.parse(["dry_run=maybe"])
    with pytest.raises(ValueError, match=r"--param 'model_version=no spaces': model_version must match"):
        runparams.parse(["model_version=no spaces"])
    with pytest.raises(ValueError, match="NAME one of dry_run, model_version, force_retrain"):
        runparams.parse(["dryrun=true"])
    assert runparams.MODEL_VERSION.get({}) is None and runparams.DRY_RUN.get({"dry_run": None}) is False


def test_the_trigger_form_and_the_cli_help_are_built_from_the_run_params() -> None:
    from mlbatch.airflow.dag_factory import _params

    assert {k: list(_params(k)) for k in ("labels", "train", "score")} == {
        "labels": ["dry_run"],
        "train": ["dry_run", "force_retrain"],
        "score": ["dry_run", "model_version"],
    }
    dry = _params("labels")["dry_run"]
    assert dry.value is False and dry.schema["type"] == "boolean"
    assert "apply_labels, export, model_gate, publish, realized_performance, register, train are skipped" in (
        dry.description
    )
    version = _params("score")["model_version"]
    assert version.schema["type"] == ["null", "string"] and version.schema["pattern"] == (
        runparams.MODEL_VERSION.pattern
    )
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "dry_run=true, model_version=V, force_retrain=true" in help_text
    assert "labels, unload, train, score, publish, export" in help_text
