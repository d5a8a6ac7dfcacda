"""The two import checks `make lint` runs besides import-linter: no cycle, no unexplained lazy import."""

from __future__ import annotations

from pathlib import Path

from devtools import import_cycles, local_imports
from devtools.import_cycles import strongly_connected
from devtools.local_imports import unexplained


def test_a_cycle_is_found_whatever_its_length_and_a_chain_is_not() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": [], "f": ["f2"], "f2": []}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"x": ["y"], "y": []}) == []


def test_a_deep_chain_needs_no_recursion() -> None:
    n = 5000
    graph = {f"m{i}": [f"m{i + 1}"] for i in range(n)} | {f"m{n}": ["m0"]}
    assert [len(c) for c in strongly_connected(graph)] == [n + 1]


def test_an_import_inside_a_function_needs_a_comment_saying_why(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n\n\n"
        "def bare():\n    import json\n    return json\n\n\n"
        "def explained():\n    # pandas takes seconds to import: only this report needs it\n"
        "    import csv\n    import io\n    return csv, io\n\n\n"
        "def inline():\n    import zlib  # the DAG parse must not pay for it\n    return zlib\n"
    )
    assert unexplained(module) == [f"{module}:5: import json"]


def test_the_package_and_the_jobs_have_no_unexplained_import_and_no_cycle() -> None:
    assert local_imports.main([]) == 0
    assert import_cycles.main() == 0
