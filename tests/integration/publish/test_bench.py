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
    assert set(r["modes"]) == {"upsert", "partitioned"}
    for path in (r["naive"], r["read"], r["predict"], r["load"]):
        assert set(path) >= {"rows_per_s", "peak_rss_mib", "seconds"}
        assert path["rows"] == 50_000 and path["rows_per_s"] > 0 and path["peak_rss_mib"] > 0
    for f in r["modes"].values():
        for path in (f["optimised"], f["publish"], f["publish_steady"]):
            assert path["rows"] == 50_000 and path["seconds"] > 0 and path["peak_rss_mib"] > 0
        slowest = min((r["read"], r["predict"], f["publish"]), key=lambda c: c["rows_per_s"])
        assert f["ceiling"]["rows_per_s"] == slowest["rows_per_s"]
        assert f["speedup"] == round(f["optimised"]["rows_per_s"] / r["naive"]["rows_per_s"], 2)
        assert f["efficiency"] == round(f["optimised"]["rows_per_s"] / slowest["rows_per_s"], 2)
        # The publish against bare LOAD DATA of the same rows with the same sessions, in the same run.
        assert f["publish_over_load"] == {
            "empty": round(f["publish"]["seconds"] / r["load"]["seconds"], 2),
            "steady": round(f["publish_steady"]["seconds"] / r["load"]["seconds"], 2),
        }


def test_fused_pipeline_loads_key_ranges_in_parallel_sessions(tmp_path, mariadb_url, caplog):
    """The fused pipeline cuts the day into key ranges from the parts' footers and loads each
    range through its own pipe and session; every row arrives once, gated and checksummed."""
    from mlbatch.features.reader import read_manifest
    from sqlalchemy import create_engine, text

    from devtools import bench

    bench.prepare(tmp_path, 300_000)  # one part of 3 row groups (131,072 rows each)
    splits = bench.footer_splits(read_manifest(None, (tmp_path / "manifest").as_uri()), 2)
    assert splits == [10_000_000 + 131_072 * 2]  # the first two row groups, then the third
    caplog.set_level("INFO", logger="mlbatch.backends.appdb")
    assert bench.run_optimised(tmp_path, mariadb_url) == 300_000
    loads = sorted(m for m in caplog.messages if "bench_history__stage: LOAD DATA keys [" in m)
    assert [m.split(" took")[0] for m in loads] == [
        "bench_history__stage: LOAD DATA keys [10262144, None)",
        "bench_history__stage: LOAD DATA keys [None, 10262144)",
    ]
    engine = create_engine(mariadb_url)
    with engine.connect() as conn:
        n, distinct, low, high = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT entity_key), MIN(entity_key), MAX(entity_key) FROM bench_predictions")
        ).one()
        logged = conn.execute(text("SELECT rows_published FROM ml_publish_log")).scalar_one()
    engine.dispose()
    assert (n, distinct, low, high, logged) == (300_000, 300_000, 10_000_000, 10_299_999, 300_000)
