"""The development tools live outside the production package, and its dev commands say so when absent."""

from __future__ import annotations

import ast
import sys

from mlbatch.cli.app import app
from typer.testing import CliRunner

from tests.support.paths import REPO


def test_the_production_package_imports_devtools_only_inside_the_dev_commands() -> None:
    allowed = {REPO / "plugins" / "mlbatch" / "commands" / "demo.py"}  # import_devtools, lazily
    offenders = []
    for path in (REPO / "plugins" / "mlbatch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "devtools" for n in names) and path not in allowed:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_demo_and_bench_without_devtools_exit_2_saying_they_are_dev_commands(monkeypatch) -> None:
    # As in the Airflow image: `import devtools` fails.
    for name in [m for m in sys.modules if m == "devtools" or m.startswith("devtools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "devtools", None)
    for command in (["demo"], ["bench", "--rows", "1000"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert f"`mlbatch {command[0]}` is a development command" in result.output, result.output


def test_the_demo_runs_the_models_it_has_data_for_and_says_why_it_skips_the_others(tmp_path) -> None:
    import yaml
    from mlbatch.backends.env import Environment
    from mlbatch.spec import load_spec

    from devtools.demo import plan

    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    for key in ("training_sql", "scoring_sql"):
        raw["features"][key] = str(REPO / raw["features"][key])

    def spec(name: str, source: dict) -> object:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**raw, "name": name, "labels": {**raw["labels"], "source": source}}))
        return load_spec(path)

    home = tmp_path / "home"
    (home / "sheets").mkdir(parents=True)
    (home / "sheets" / "theirs.csv").write_text("device_id,gender\n1,male\n")
    env = Environment(
        home=home,
        appdb_url=f"sqlite:///{home / 'app.db'}",
        object_store=(home / "objects").as_uri(),
        warehouse_url=f"duckdb://{home / 'warehouse.duckdb'}",
        launcher_kind="local",
        specs_dir=tmp_path,
    )
    synthetic = spec("device_gender", {"file": "sheets/device_gender.csv"})  # devtools.synth makes it
    theirs = spec("their_model", {"file": "sheets/theirs.csv"})  # a label file is there already
    nothing = spec("no_data", {"file": "sheets/none.csv"})
    sheet = spec("on_a_sheet", {"sheet": "1AbCdEfGhIjKlMnOpQrStUvWxYz", "worksheet": "labels"})

    runnable, skipped = plan(env, [synthetic, theirs, nothing, sheet])
    assert [s.name for s in runnable] == ["device_gender", "their_model"]
    why = dict(skipped)
    assert set(why) == {"no_data", "on_a_sheet"}
    assert f"no label file {home / 'sheets' / 'none.csv'}" in why["no_data"]
    assert "Google Sheet" in why["on_a_sheet"]


def test_the_demo_runs_only_the_models_named(monkeypatch) -> None:
    import pytest
    from mlbatch.backends.env import Environment
    from mlbatch.errors import UsageError

    from devtools.demo import chosen_specs

    monkeypatch.setenv("MLBATCH_SPECS_DIR", str(REPO / "dags" / "specs"))
    env = Environment.from_env()
    assert [s.name for s in chosen_specs(env, ["device_gender"])] == ["device_gender"]
    assert {s.name for s in chosen_specs(env, None)} == {"device_gender", "recipe_category"}
    with pytest.raises(UsageError, match="no spec for model nope in .*; known: device_gender, recipe_category"):
        chosen_specs(env, ["nope"])
