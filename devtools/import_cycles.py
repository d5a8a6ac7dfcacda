"""No import cycle in the production package (``make lint``).

Builds the import graph with grimp (the graph import-linter checks its contracts on: every
import, function-level and ``TYPE_CHECKING`` ones included) and lists each strongly connected
set of modules with the imports that close it. Usage: ``python -m devtools.import_cycles``;
prints ``no import cycle among N modules (grimp X)`` and exits 0, or the cycles and exits 1.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import grimp

PACKAGE = "mlbatch"


class _Tarjan:
    """Tarjan's algorithm, iterative (no recursion limit on a deep graph)."""

    def __init__(self, graph: dict[str, list[str]]):
        self.graph = graph
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.stack: list[str] = []
        self.on_stack: set[str] = set()
        self.found: list[list[str]] = []

    def _visit(self, node: str) -> None:
        self.index[node] = self.low[node] = len(self.index)
        self.stack.append(node)
        self.on_stack.add(node)

    def _close(self, node: str) -> None:
        """``node`` is the root of a component: pop it off the stack; keep it if it is a cycle."""
        members = []
        while True:
            member = self.stack.pop()
            self.on_stack.discard(member)
            members.append(member)
            if member == node:
                break
        if len(members) > 1:
            self.found.append(sorted(members))

    def run(self, root: str) -> None:
        self._visit(root)
        work = [(root, iter(self.graph[root]))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    self.low[parent] = min(self.low[parent], self.low[node])
                if self.low[node] == self.index[node]:
                    self._close(node)
            elif child not in self.index:
                self._visit(child)
                work.append((child, iter(self.graph[child])))
            elif child in self.on_stack:
                self.low[node] = min(self.low[node], self.index[child])


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """The sets of two or more modules that import each other, directly or not."""
    tarjan = _Tarjan(graph)
    for root in graph:
        if root not in tarjan.index:
            tarjan.run(root)
    return tarjan.found


def main() -> int:
    g = grimp.build_graph(PACKAGE)
    modules = sorted(g.modules)
    graph = {m: sorted(i for i in g.find_modules_directly_imported_by(m) if i in g.modules) for m in modules}
    cycles = strongly_connected(graph)
    for members in cycles:
        print(f"cycle of {len(members)} modules:")
        for m in members:
            for imported in graph[m]:
                if imported in members:
                    print(f"  {m} -> {imported}")
    if cycles:
        print(f"{len(cycles)} import cycle(s) in {PACKAGE}", file=sys.stderr)
        return 1
    print(f"no import cycle among {len(modules)} modules of {PACKAGE} (grimp {version('grimp')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
