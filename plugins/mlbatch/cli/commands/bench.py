"""``mlbatch bench``: the scoring day's cost per row, optimised path against the naive one."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from mlbatch.cli.commands.demo import import_devtools
from mlbatch.cli.common import err, out


def register(app: typer.Typer) -> None:
    app.command()(bench)


def bench(
    rows: Annotated[int, typer.Option(min=1000, help="Rows of the synthetic scoring day.")] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    naive: Annotated[bool, typer.Option(help="Also run the naive path (slow: DataFrame.to_sql).")] = True,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of every path, alternating order; medians.")] = 1,
) -> None:
    """Read → predict → gate → publish → export against a MariaDB started here; components alone."""

    run = import_devtools("bench", "bench").run
    result = run(
        rows,
        naive=naive,
        repeat=repeat,
        log=(lambda m: err.print(m, highlight=False)) if not as_json else lambda m: None,
    )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("path", "rows/s", "seconds", "peak RSS MiB", title=f"mlbatch bench, {rows:,} rows")
    paths = {"read": result["read"], "predict": result["predict"], "bare LOAD DATA (publish ceiling)": result["load"]}
    paths |= {"naive": result["naive"]} if result["naive"] else {}
    for mode, figures in result["modes"].items():
        paths |= {
            f"{mode}: optimised": figures["optimised"],
            f"{mode}: publish, empty": figures["publish"],
            f"{mode}: publish, steady": figures["publish_steady"],
        }
    for name, r in paths.items():
        table.add_row(name, f"{r['rows_per_s']:,}", f"{r['seconds']:.2f}", f"{r['peak_rss_mib']:.0f}")
    out.print(table)
    for mode, f in result["modes"].items():
        speedup = f"{f['speedup']}×" if f["speedup"] is not None else "n/a (--no-naive)"
        out.print(
            f"publish.mode {mode}: speedup {speedup}; efficiency {f['efficiency']} of the ceiling "
            f"({f['ceiling']['component']}, {f['ceiling']['rows_per_s']:,} rows/s); publish ÷ bare LOAD DATA: "
            f"{f['publish_over_load']['empty']}× empty, {f['publish_over_load']['steady']}× steady",
            highlight=False,
        )
