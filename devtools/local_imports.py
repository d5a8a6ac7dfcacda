"""Every import inside a function says why it is there (``make lint``).

An import belongs at the top of its module. One inside a function is allowed where a comment
says why, on its line or on the comment line(s) right above the block of imports it starts
(a heavy library kept out of DAG parsing, a backend chosen at run time, a module that imports
this one). Usage: ``python -m devtools.local_imports [PATH ...]`` (default: the production
package and jobs/); exits 1 listing each import without its reason.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = (ROOT / "plugins" / "mlbatch", ROOT / "jobs")


def _function_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    yield child


def _has_reason(lines: list[str], node: ast.Import | ast.ImportFrom) -> bool:
    """A ``#`` comment on the import's own line(s), or above it, past any imports of its block."""
    own = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
    if any("#" in line for line in own):
        return True
    i = node.lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")) and "#" not in lines[i]:
        i -= 1  # the block's earlier imports: the reason sits above the first one
    return i >= 0 and (lines[i].strip().startswith("#") or ("import " in lines[i] and "#" in lines[i]))


def unexplained(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in _function_imports(ast.parse(text, str(path))):
        if not _has_reason(lines, node):
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{where}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(set(found), key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or list(DEFAULT_PATHS)
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    problems = [line for f in files for line in unexplained(f)]
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} import(s) inside a function without a comment saying why", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
