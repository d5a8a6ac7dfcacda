"""Errors the ``mlbatch`` CLI reports: their exit code comes from their type (mlbatch.errors), and
their text reaches stderr verbatim, brackets included (rich never reads it as markup)."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from mlbatch import errors
from mlbatch.airflow.pipeline import PipelineError
from mlbatch.backends.appdb.connection import AppDbConnectionError
from mlbatch.backends.appdb.locks import LockWaitError
from mlbatch.backends.appdb.publisher import PublishError, PublishStopped
from mlbatch.backends.launchers.base import JobFailed
from mlbatch.backends.launchers.images import ImageBuildError
from mlbatch.backends.store import StoreError
from mlbatch.backends.warehouse.errors import RedshiftStatementError, UnloadError, WarehouseError
from mlbatch.cli.app import app
from mlbatch.cli.common import error_text, report, reports_errors, usage_errors
from mlbatch.errors import EXIT_FAILED, EXIT_GATE, EXIT_USAGE, MlbatchError, StepFailed, exit_code_of
from mlbatch.features.reader import ManifestMismatch
from mlbatch.labels.check import LabelFileError
from mlbatch.labels.sheets import SheetsError
from mlbatch.maths.gates import Check, GateFailed
from mlbatch.reporting.runs import NoScoredRun
from mlbatch.spec import SpecError
from mlbatch.spec.query import SqlTemplateError
from mlbatch.stages.registry import RegistryError
from typer.testing import CliRunner

from tests.support.paths import REPO
from tests.support.specs import write_spec

DS = "2026-11-22"
PATTERN = "^[a-z][a-z0-9_]{0,51}$"  # MODEL_NAME: rich once printed it as '^{0,51}$'
MARKUP = "[red]boom[/] in [bold]x[/bold] at [a-z]"  # every kind of tag rich would eat
GATE = GateFailed("device_gender.prediction", [Check("null_fraction[col]", False, 0.5, 0.2, "[red]not bold[/]")])


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    for var in ("MLBATCH_APPDB_URL", "MLBATCH_SPECS_DIR", "MLBATCH_OBJECT_STORE", "MLBATCH_WAREHOUSE_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _steps(*found: tuple[str, Callable[[], Any]]) -> Callable[..., Iterator[tuple[str, Callable[[], Any], bool]]]:
    """A stand-in for mlbatch.cli.steps.steps: these steps, none skipped, whatever stages were chosen."""

    def steps(ctx: object, stages: list[str]) -> Iterator[tuple[str, Callable[[], Any], bool]]:
        for name, thunk in found:
            yield name, thunk, False

    return steps


def _raise(exc: BaseException) -> Callable[..., Any]:
    """A step's thunk (no arguments), or a stand-in for a function (any arguments), that raises ``exc``."""

    def thunk(*args: object) -> Any:
        raise exc

    return thunk


# --- (a) the real app, through its error paths: exact text on stderr, the type's exit code -----


def test_a_spec_with_a_bad_name_prints_the_whole_pattern(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, lambda raw: raw.update(name="Bad-Name"))
    result = _invoke("run", str(spec), "--ds", DS)
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"error: invalid model spec {spec}:\n  name: String should match pattern '{PATTERN}'\n" in result.stderr


def test_a_spec_with_a_bad_field_names_it_brackets_and_all(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, lambda raw: raw["score"].update({"[red]shards[/]": 4}))
    result = _invoke("run", str(spec), "--ds", DS)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "  score.[red]shards[/]: unknown field (check the spelling" in result.stderr


def test_an_unknown_stage_is_named_as_typed() -> None:
    result = _invoke("run", "device_gender", "--ds", DS, "--stage", "nope[x]")
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr == (
        "error: unknown stage nope[x]; choose from labels, unload, train, score, publish, export\n"
    )


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("dry_run=[yes]", "error: --param 'dry_run=[yes]': dry_run takes true or false\n"),
        ("[b]x=1", "error: --param '[b]x=1': expected NAME=VALUE with NAME one of dry_run, model_version"),
    ],
)
def test_a_bad_param_is_quoted_whole(param: str, message: str) -> None:
    result = _invoke("run", "device_gender", "--ds", DS, "--param", param)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.startswith(message), result.stderr


def test_a_day_that_is_no_date_exits_2() -> None:
    result = _invoke("run", "device_gender", "--ds", "[2026]", "--run-id", "t")
    assert (result.exit_code, result.stderr) == (EXIT_USAGE, "error: ds '[2026]' is not a date in YYYY-MM-DD form\n")


def _patch_steps(monkeypatch: pytest.MonkeyPatch, fake: object) -> None:
    """The step walk (mlbatch.cli.steps.steps) as `mlbatch run` and `mlbatch labels sync` call it."""
    for command in ("run", "labels"):
        monkeypatch.setattr(f"mlbatch.cli.commands.{command}.steps", fake)


@pytest.mark.parametrize(
    ("args", "step"),
    [
        (["run", "device_gender", "--ds", DS, "--run-id", "t", "--stage", "score"], "prediction_gate"),
        (["labels", "sync", "device_gender"], "labels_gate"),
    ],
)
def test_a_gate_that_blocks_a_step_exits_1_with_its_checks_verbatim(
    monkeypatch: pytest.MonkeyPatch, args: list[str], step: str
) -> None:
    _patch_steps(monkeypatch, _steps((step, _raise(GATE))))
    result = _invoke(*args)
    assert result.exit_code == EXIT_GATE, result.output
    assert result.stderr == (
        f"{step}: gate device_gender.prediction blocked: 1 of 1 checks failed\n"
        "  FAIL null_fraction[col]: observed 0.5, threshold 0.2 ([red]not bold[/])\n"
    )


def test_an_unexpected_error_in_a_step_exits_3_with_its_type_and_text(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = _steps(("unload", lambda: {"pattern": PATTERN, "rows": 3}), ("train", _raise(RuntimeError(MARKUP))))
    _patch_steps(monkeypatch, steps)
    result = _invoke("run", "device_gender", "--ds", DS, "--run-id", "t")
    assert result.exit_code == EXIT_FAILED, result.output
    assert result.stdout == f"ok device_gender {DS} unload: pattern={PATTERN}, rows=3\n"  # the ok line too
    assert result.stderr == f"train failed: RuntimeError: {MARKUP}\n"  # no traceback without --verbose


def test_verbose_adds_the_traceback_of_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_steps(monkeypatch, _steps(("train", _raise(RuntimeError(MARKUP)))))
    result = _invoke("run", "device_gender", "--ds", DS, "--run-id", "t", "--verbose")
    assert result.exit_code == EXIT_FAILED, result.output
    assert result.stderr.startswith(f"train failed: RuntimeError: {MARKUP}\n")
    assert "Traceback" in result.stderr and "in thunk" in result.stderr  # where the step raised


def test_an_input_error_found_by_a_step_keeps_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = SqlTemplateError("training.sql line 3: [x] is undefined")
    _patch_steps(monkeypatch, _steps(("unload", _raise(bad))))
    result = _invoke("run", "device_gender", "--ds", DS, "--run-id", "t", "--verbose")
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr == "unload failed: SqlTemplateError: training.sql line 3: [x] is undefined\n"


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (RuntimeError(MARKUP), EXIT_FAILED, f"error: RuntimeError: {MARKUP}\n"),  # not ours: the type says more
        (StoreError(f"cannot read s3://b/{MARKUP}"), EXIT_FAILED, f"error: cannot read s3://b/{MARKUP}\n"),
        (SpecError("dags/specs/[x].yaml", [("name", PATTERN)]), EXIT_USAGE, "error: invalid model spec "),
    ],
)
def test_an_error_outside_any_step_exits_with_its_types_code(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, code: int, message: str
) -> None:
    monkeypatch.setattr("mlbatch.cli.commands.status.collect", _raise(raised))
    result = _invoke("status")
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message) and str(raised) in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_registry_refusal_exits_2_with_its_reason() -> None:
    result = _invoke("models", "promote", "device_gender", "v9", "--reason", "[b]why[/b]")
    assert (result.exit_code, result.stderr) == (
        EXIT_USAGE,
        "error: device_gender has no version 'v9' (latest: none)\n",
    )


def test_a_label_file_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "[sheet].csv"
    result = _invoke("labels", "check", "device_gender", "--file", str(missing))
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.startswith("error: ") and str(missing) in result.stderr


def test_an_exit_code_a_command_chooses_passes_through(tmp_path: Path) -> None:
    sheet = tmp_path / "labels.csv"
    sheet.write_text("device_id,gender\n[x],male\n")
    result = _invoke("labels", "check", "device_gender", "--file", str(sheet))
    assert result.exit_code == EXIT_GATE, result.output  # its own typer.Exit(1), not reported as an error
    assert result.stdout.startswith('row 2: invalid_key: "[x]" is not a whole number') and result.stderr == ""


def test_click_usage_errors_are_left_to_click() -> None:
    result = _invoke("run", "device_gender")  # --ds missing
    assert result.exit_code == 2 and "Missing option '--ds'" in result.output


# --- (b) the mapping itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "code", "builtin"),
    [
        (GateFailed, EXIT_GATE, RuntimeError),
        (SpecError, EXIT_USAGE, ValueError),
        (PipelineError, EXIT_USAGE, ValueError),
        (RegistryError, EXIT_USAGE, ValueError),
        (SqlTemplateError, EXIT_USAGE, ValueError),
        (LabelFileError, EXIT_USAGE, ValueError),
        (AppDbConnectionError, EXIT_USAGE, ValueError),
        (ManifestMismatch, EXIT_USAGE, ValueError),
        (NoScoredRun, EXIT_USAGE, LookupError),
        (PublishError, EXIT_FAILED, RuntimeError),
        (PublishStopped, EXIT_FAILED, RuntimeError),
        (LockWaitError, EXIT_FAILED, RuntimeError),
        (WarehouseError, EXIT_FAILED, RuntimeError),
        (UnloadError, EXIT_FAILED, RuntimeError),
        (RedshiftStatementError, EXIT_FAILED, RuntimeError),
        (JobFailed, EXIT_FAILED, RuntimeError),
        (ImageBuildError, EXIT_FAILED, RuntimeError),
        (SheetsError, EXIT_FAILED, RuntimeError),
        (StoreError, EXIT_FAILED, RuntimeError),
    ],
)
def test_every_project_error_is_an_mlbatch_error_and_still_its_builtin(
    cls: type[Exception], code: int, builtin: type[Exception]
) -> None:
    assert issubclass(cls, MlbatchError) and issubclass(cls, builtin)  # `except ValueError` still catches it
    assert cls.exit_code == code


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) of every public exception class defined in plugins/mlbatch, found in the source."""
    root = REPO / "plugins"
    found = []
    for path in sorted((root / "mlbatch").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(), str(path)).body:
            bases = [ast.unparse(b).split(".")[-1] for b in node.bases] if isinstance(node, ast.ClassDef) else []
            if any(re.search(r"(Error|Exception|Failed|Mismatch|Run|Stopped)$", b) for b in bases):
                found.append((module, node.name))
    return found


def test_no_error_class_of_the_package_is_left_out_of_the_hierarchy() -> None:
    classes = _error_classes()
    assert ("mlbatch.spec.model", "SpecError") in classes and len(classes) >= 19  # the scan finds them
    outside = [
        f"{module}.{name}"
        for module, name in classes
        if not name.startswith("_") and not issubclass(getattr(importlib.import_module(module), name), MlbatchError)
    ]
    assert outside == []


def test_the_exit_code_of_an_error_is_its_types() -> None:
    assert exit_code_of(GATE) == EXIT_GATE
    assert exit_code_of(SpecError("x.yaml", [("name", "bad")])) == EXIT_USAGE
    assert exit_code_of(StoreError("s3://b/k")) == EXIT_FAILED
    assert exit_code_of(ValueError("not ours")) == EXIT_FAILED  # unexpected: never 1, which means a gate
    assert exit_code_of(errors.UsageError("x")) == EXIT_USAGE and exit_code_of(errors.StageFailed("x")) == EXIT_FAILED


@pytest.mark.parametrize(
    ("cause", "code", "text"),
    [
        (GATE, EXIT_GATE, f"score: {GATE}"),
        (SqlTemplateError("t [x]"), EXIT_USAGE, "score failed: SqlTemplateError: t [x]"),
        (JobFailed.__new__(JobFailed), EXIT_FAILED, "score failed: JobFailed: "),
        (KeyError("[k]"), EXIT_FAILED, "score failed: KeyError: '[k]'"),
    ],
)
def test_a_step_failure_takes_its_causes_code_and_names_the_step(cause: Exception, code: int, text: str) -> None:
    failed = StepFailed("score", cause)
    assert failed.exit_code == code and failed.cause is cause
    assert error_text(failed).plain == text


def test_report_prints_verbatim_and_returns_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert report(errors.UsageError(MARKUP)) == EXIT_USAGE
    assert report(OSError(MARKUP)) == EXIT_FAILED
    assert capsys.readouterr().err == f"error: {MARKUP}\nerror: OSError: {MARKUP}\n"


def test_usage_errors_turns_the_named_builtins_into_exit_2_and_leaves_the_rest() -> None:
    with pytest.raises(errors.UsageError, match=r"^bad \[x\]$") as caught, usage_errors(ValueError):
        raise ValueError("bad [x]")
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(GateFailed), usage_errors(RuntimeError):  # an mlbatch error keeps its own code
        raise GATE
    with pytest.raises(KeyError), usage_errors(ValueError):
        raise KeyError("not named")


def test_reports_errors_exits_with_the_code_and_lets_typer_exits_through() -> None:
    @reports_errors
    def command(verbose: bool = False) -> None:
        raise GATE

    @reports_errors
    def chooses(verbose: bool = False) -> None:
        raise typer.Exit(7)

    with pytest.raises(typer.Exit) as exited:
        command(verbose=False)
    assert exited.value.exit_code == EXIT_GATE
    with pytest.raises(typer.Exit) as exited:
        chooses()
    assert exited.value.exit_code == 7


def _callbacks(typer_app: typer.Typer) -> Iterator[tuple[str, Callable[..., Any]]]:
    for info in typer_app.registered_commands:
        assert info.callback is not None
        yield info.name or info.callback.__name__, info.callback
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None
        yield from _callbacks(group.typer_instance)


def test_every_command_reports_its_errors_through_the_one_place() -> None:
    commands = dict(_callbacks(app))
    assert {"run", "status", "sql", "doctor", "bench", "demo", "promote", "sync"} <= set(commands)
    assert [name for name, cb in commands.items() if not getattr(cb, "reports_errors", False)] == []
