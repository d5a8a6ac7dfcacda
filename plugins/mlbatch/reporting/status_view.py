"""``mlbatch status`` for people: one block per model, label and value, readable at 80 columns.

A wide table of six columns cut every cell at 80 columns (``20261122-…``). Here each model is a
two-column block whose values wrap (at spaces, or folded within a long word) and are never
elided: a version, a sync id or a reason stays whole and copyable at any width.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from mlbatch.reporting import costs


def realized_cell(r: dict[str, Any] | None) -> str:
    """``roc_auc 0.712 [0.68, 0.74] n=1,200 on 2026-11-22 (offline 0.861) DEGRADED``."""
    if not r:
        return "-"
    value = "n/a" if r["value"] is None else f"{r['value']:.3f}"
    lo, hi = r["ci"]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    offline = f" (offline {r['offline']:.3f})" if r["offline"] is not None else ""
    flag = " DEGRADED" if r["degraded"] else ""
    return f"{r['metric']} {value}{ci} n={r['n_labelled']:,} on {r['ds']}{offline}{flag}"


def _retrain(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    reason: str = r["reason"]  # mlbatch.reporting.status: the retrain decision's why
    return ("train now: " if r["retrain"] else "no: ") + reason


def _cost(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return f"{c['month']}, {c['runs']} run(s): {costs.line(c)}"


def rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of one model's block."""
    lab, prod, pred, exp = m["labels"], m["production_model"], m["predictions"], m["export"]
    return [
        ("labels", f"{lab['rows']:,} (sync {lab['sync_id']})" if lab else "-"),
        ("production", f"{prod['version']} {prod['metric']}={prod['value']:.4f}" if prod else "-"),
        ("predictions", f"{pred['rows']:,} on {pred['latest_ds']}" if pred else "-"),
        ("export", f"{exp['rows']:,} on {exp['latest_ds']}" if exp else "-"),
        ("realized", realized_cell(m.get("realized"))),
        ("retraining", _retrain(m.get("retrain"))),
        ("cost", _cost(m.get("cost"))),
    ]


def render(report: dict[str, Any]) -> Group:
    """Every model's block, one after the other."""
    blocks: list[Any] = []
    for m in report["models"]:
        table = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False, expand=False)
        table.add_column("what", style="bold", no_wrap=True, min_width=11)
        table.add_column("value", overflow="fold")
        for label, value in rows(m):
            table.add_row(label, Text(value))
        blocks += [Text(m["name"], style="bold underline"), table, Text("")]
    return Group(*blocks)
