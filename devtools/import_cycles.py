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


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a deep graph): the sets of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return found


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
