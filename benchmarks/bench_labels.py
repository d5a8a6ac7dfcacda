"""Label sync at sheet scale: read, check and diff a 200k-row sheet, then apply diffs to MariaDB.

    python benchmarks/bench_labels.py [--rows 200000] [--change 0.05] [--appdb URL]

Phases, in one process, each timed (seconds) with the process's peak RSS after it (VmHWM, MB):

- ``read``: gspread's one ``values:batchGet`` of the whole worksheet from the Sheets API double
  on 127.0.0.1 (JSON over HTTP, as from Google), into header + rows;
- ``check``: :func:`mlbatch.labels.check.check_labels` (1% bad rows, some duplicates);
- ``diff_memory``: :func:`mlbatch.labels.sync.diff` against a current label set that differs by
  ``--change`` (updates, inserts and deletes);
- ``apply_initial``: the first sync into an empty MariaDB table (every key an insert + history);
- ``read_current``, ``diff_db``, ``apply_changes``: the next sync against MariaDB: read the
  current labels, diff, apply the changed keys in one transaction.

MariaDB is started with :mod:`devtools.devservers` unless ``--appdb`` names one. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sheet(rows: int, seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    table = [["device_id", "gender", "note", "status"]]
    for i in range(rows):
        key, label = str(1_000_000 + i), rng.choice(("male", "female", "Female ", "MALE"))
        r = rng.random()
        if r < 0.004:
            label = "unknown"
        elif r < 0.007:
            key = f"{key[:3]},{key[3:]}"  # formatted with a separator: invalid_key
        elif r < 0.01:
            label = "#N/A"
        table.append([key, label, "note" if i % 10 == 0 else "", "ok" if i % 3 else ""])
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--change", type=float, default=0.05, help="share of keys that differ from the DB")
    ap.add_argument("--appdb", help="SQLAlchemy URL of a MySQL/MariaDB database (else one is started)")
    args = ap.parse_args()

    from mlbatch.labels import sheets
    from mlbatch.labels.check import check_labels
    from mlbatch.labels.sync import diff
    from mlbatch.spec import SheetSource

    from tests.fakes.sheets_api import FakeSheetsApi

    out: dict[str, object] = {"rows": args.rows, "change": args.change, "phases": {}}
    phases: dict[str, dict[str, float]] = out["phases"]  # type: ignore[assignment]

    def timed(name: str, fn, *a, **kw):
        t0 = time.perf_counter()
        result = fn(*a, **kw)
        phases[name] = {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(_rss_mb(), 1)}
        return result

    out["baseline_rss_mb"] = round(_rss_mb(), 1)
    grid = _sheet(args.rows)
    with FakeSheetsApi() as api:
        api.add_worksheet("bench" * 4, "labels", grid, row_count=len(grid))
        os.environ[sheets.ENV_ENDPOINT] = api.endpoint
        source = SheetSource(sheet="bench" * 4, worksheet="labels", conn_id="mlbatch_bench_none")
        data = timed("read", sheets.read_worksheet, source)
    del grid
    report = timed(
        "check",
        check_labels,
        data.header,
        data.rows,
        model="bench",
        key_column="device_id",
        label_column="gender",
        classes=["female", "male"],
        max_invalid_fraction=0.02,
        ignore_column="status",
    )
    desired = {str(k): v for k, v in report.labels.items()}
    out["check"] = {"accepted": report.accepted, "rejected": len(report.rejected), "blocked": report.blocked}

    rng = random.Random(11)
    keys = list(desired)
    n = int(len(keys) * args.change / 3)
    current = dict(desired)
    for k in rng.sample(keys, n):  # updates
        current[k] = "male" if current[k] == "female" else "female"
    for k in rng.sample(keys, n):  # inserts: keys the DB lacks
        current.pop(k, None)
    for i in range(n):  # deletes: keys the sheet lacks
        current[str(9_000_000 + i)] = "male"
    d = timed("diff_memory", diff, current, desired)
    out["diff"] = d.summary()

    server = None
    url = args.appdb
    if url is None:
        from devtools.devservers import start_mariadb

        server = start_mariadb(Path(tempfile.mkdtemp(prefix="bench-labels-")))
        url = server.url
    try:
        out["apply"] = _against_db(url, current, desired, timed)
    finally:
        if server is not None:
            server.stop()
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(out, indent=2))


def _against_db(url: str, current: dict[str, str], desired: dict[str, str], timed) -> dict[str, object]:
    from mlbatch.backends.appdb.hook import AppDbHook
    from mlbatch.labels import sync

    hook = AppDbHook(url)
    hook.ensure_schema()
    now = datetime(2026, 11, 22)
    with hook.begin() as conn:  # a clean slate when --appdb points at a used database
        for t in ("ml_label_history", "ml_labels"):
            conn.exec_driver_sql(f"DELETE FROM {t} WHERE model = 'bench'")

    def apply_all(d: sync.LabelDiff, sid: str) -> None:
        with hook.begin() as conn:
            sync.apply(conn, "bench", d, sid, now)

    first = sync.diff({}, current)
    timed("apply_initial", apply_all, first, "bench-1")
    with hook.connect() as conn:
        in_db = timed("read_current", sync.current_labels, conn, "bench")
    d = timed("diff_db", sync.diff, in_db, desired)
    timed("apply_changes", apply_all, d, "bench-2")
    with hook.connect() as conn:
        assert sync.current_labels(conn, "bench") == desired, "the table does not hold the sheet's labels"
    hook.dispose()
    return {"initial_inserts": first.changed, **d.summary()}


if __name__ == "__main__":
    main()
