"""The scoring day end to end at several sizes: `python benchmarks/bench_pipeline.py --rows 1000000 3000000`.

Writes benchmarks/results/pipeline.json and, with --plot, benchmarks/pipeline.png (rows/s and
peak RSS against rows). Each size is one `devtools.bench.run`: a MariaDB started for it, every
path in its own child process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from devtools.bench import run

HERE = Path(__file__).resolve().parent


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r["rows"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("optimised", "naive"):
        pts = [(r["rows"], r[name]) for r in results if r.get(name)]
        a.plot([p[0] for p in pts], [p[1]["rows_per_s"] for p in pts], "o-", label=name)
        b.plot([p[0] for p in pts], [p[1]["peak_rss_mib"] for p in pts], "o-", label=name)
    a.plot(rows, [r["ceiling"]["rows_per_s"] for r in results], "k--", label="ceiling (slowest component)")
    a.set(xscale="log", xlabel="rows", ylabel="rows/s", title="throughput")
    b.set(xscale="log", xlabel="rows", ylabel="peak RSS (MiB)", title="peak memory of the worker")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--naive-max", type=int, default=3_000_000, help="skip the naive path above this size")
    p.add_argument("--plot", action="store_true")
    args = p.parse_args()
    results = []
    for n in args.rows:
        results.append(run(n, naive=n <= args.naive_max, log=lambda m: print(m, file=sys.stderr)))
        print(json.dumps(results[-1]), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "pipeline.json").write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, HERE / "pipeline.png")


if __name__ == "__main__":
    main()
