"""`mlbatch bench` really runs every path against a MariaDB it starts, and reports the contract."""

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_bench_json_contract_at_small_scale():
    proc = subprocess.run(
        [str(BIN / "mlbatch"), "bench", "--rows", "50000", "--json"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert r["rows"] == 50_000
    for path in (r["optimised"], r["naive"], *r["components"].values()):
        assert set(path) >= {"rows_per_s", "peak_rss_mib", "seconds"}
        assert path["rows"] == 50_000 and path["rows_per_s"] > 0 and path["peak_rss_mib"] > 0
    assert set(r["components"]) == {"read", "predict", "publish"}
    slowest = min(r["components"].values(), key=lambda c: c["rows_per_s"])
    assert r["ceiling"]["rows_per_s"] == slowest["rows_per_s"]
    assert r["speedup"] == round(r["optimised"]["rows_per_s"] / r["naive"]["rows_per_s"], 2)
    assert r["efficiency"] == round(r["optimised"]["rows_per_s"] / slowest["rows_per_s"], 2)
