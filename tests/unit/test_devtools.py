"""The development tools live outside the production package, and its dev commands say so when absent."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from mlbatch.cli import app
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]


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
