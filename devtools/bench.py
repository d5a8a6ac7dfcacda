"""``mlbatch bench``: what a scoring day costs per row, our path against the naive one.

In one run, against a real MariaDB that the benchmark starts itself (Aurora's stand-in):

* **optimised**: parquet parts + manifest → parallel reader → xgboost ``inplace_predict`` in
  batches → streaming prediction gate → ``LOAD DATA LOCAL INFILE`` fed through one named pipe per
  key range into parallel sessions (so reading and predicting overlap the load) → the publish of
  :mod:`mlbatch.backends.appdb.mysql_publish` (partition exchange, guarded upsert) → export to DuckDB;
* **naive**, what a team writes first: ``pandas.read_parquet`` of every part → ``DMatrix``
  predict → ``DataFrame.to_sql`` into a staging table, a primary key on the entity and a
  ``RENAME TABLE`` swap (what an application can read by key);
* each **component** alone at the same N (read, predict, publish into an empty table and into a
  steady one, where every key is already there), to find the ceiling;
* the publish's own ceiling: bare ``LOAD DATA`` of the same TSV with the same sessions into an
  empty keyed table (``load``), so the publish is measured against the server's load speed.

``--repeat`` runs every path that many times, in alternating order; the figures are medians.

Every path runs in its own child process (``python -m devtools.bench worker ...``) so peak RSS
figures do not mix; the parent prepares the data once and collects the results.
"""

from __future__ import annotations

import itertools
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from devtools.bench_data import (
    BATCH_ROWS,
    CLASSES,
    DS,
    FEATURES,
    IN_FLIGHT,
    LOAD_SESSIONS,
    MODEL,
    NEXT_DS,
    VERSION,
    _booster,
    _fresh_table,
    _log_row,
    _matrix,
    _prediction_batch,
    _tsv,
    feature_names,
    footer_splits,
    prepare,
)

EXPORT_SCHEMA = pa.schema(
    [
        ("entity_key", pa.int64()),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("model_version", pa.string()),
        ("ds", pa.date32()),
    ]
)
_END = object()


def run_optimised(work: Path, db_url: str, mode: str = "upsert") -> int:
    """Read → predict → gate → LOAD DATA through pipes and the export, all overlapped; then publish.

    One producer thread reads, predicts, formats and routes each row to its key range's pipe
    (the ranges come from the parts' footer statistics); a session per range pulls its TSV
    while DuckDB pulls the same batches for the export. Nothing goes live before the prediction
    gate passes: the gate runs after the load and before the exchange and upsert, and the
    export's transaction commits only after the gate's verdict (a failed gate rolls it back).
    """
    return _FusedRun(work, db_url, mode).run()


class _FusedRun:
    """One run of the fused pipeline: a producer, a pipe per key range, the export, the gate.

    The threads share this object's state; errors are handed to the main thread in ``failure``.
    """

    def __init__(self, work: Path, db_url: str, mode: str) -> None:
        import queue

        from mlbatch.backends.appdb.checksum import RowChecksum
        from mlbatch.features.reader import read_manifest

        self.work, self.mode = work, mode
        self.manifest_uri = (work / "manifest").as_uri()
        manifest = read_manifest(None, self.manifest_uri)
        self.expected = manifest.record_count
        self.booster = _booster(work)
        # One xgboost thread: on 2 cores the MariaDB server needs the other one for the load,
        # which is the slowest component; predicting is not.
        self.booster.set_param({"nthread": 1})
        self.db, self.table = _fresh_table(db_url, MODEL)
        self.checksum = RowChecksum()
        self.stats = {"null_keys": 0, "bad_scores": 0}
        self.failure: list[BaseException] = []
        self.verdict = threading.Event()
        self.gate_ok: list[bool] = []
        self.exports: queue.Queue[Any] = queue.Queue(maxsize=8)  # bounded: memory stays flat
        self.exported: list[int] = []
        self.day = date.fromisoformat(DS)
        # The day's key ranges, one per load session, cut from the parts' footer statistics (no
        # pass over the rows); each range streams through its own pipe into its own session.
        self.splits = footer_splits(manifest, LOAD_SESSIONS)
        bounds = [None, *self.splits, None]
        self.ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.pipes: list[queue.Queue[Any]] = [queue.Queue(maxsize=8) for _ in self.ranges]

    def run(self) -> int:
        from mlbatch.backends.appdb.mysql_publish import publish_mysql
        from mlbatch.backends.appdb.pipes import piped_sources

        exporter = threading.Thread(target=self.export, name="bench-export", daemon=True)
        exporter.start()
        self.producer = threading.Thread(target=self.produce, name="bench-produce", daemon=True)
        self.producer.start()
        with piped_sources([self.writer(p) for p in self.pipes], self.ranges) as (sources, finish):
            self.finish = finish
            try:
                publish_mysql(
                    self.db, self.table, sources, self.expected, self.gate_then_log_row, day=self.day, mode=self.mode
                )
            finally:
                self.verdict.set()  # a failed load is a failed gate for the export: it rolls back
        exporter.join(timeout=60)
        if self.failure:
            raise self.failure[0]
        if self.exported != [self.expected]:
            raise RuntimeError(f"export holds {self.exported} rows for {DS}, published {self.expected:,}")
        return self.checksum.rows

    def export_batches(self) -> Any:
        while (item := self.exports.get()) is not _END:
            yield item
        self.verdict.wait()
        if not self.gate_ok:
            raise RuntimeError("prediction gate failed: the export is rolled back")

    def export(self) -> None:
        from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse
        from mlbatch.names import export_table

        try:
            wh = DuckDBWarehouse(self.work / "warehouse.duckdb")
            table = export_table(MODEL)
            self.exported.append(wh.replace_day_stream(table, DS, EXPORT_SCHEMA, self.export_batches()))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.failure.append(exc)

    def produce(self) -> None:
        from mlbatch.features.reader import iter_batches

        try:
            batches = iter_batches(self.manifest_uri, threads=2, batch_rows=BATCH_ROWS, max_bytes_in_flight=IN_FLIGHT)
            for batch in batches:
                self.route(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by the gate
            self.failure.append(exc)
        finally:
            for pipe in self.pipes:
                pipe.put(_END)
            self.exports.put(_END)

    def route(self, batch: pa.RecordBatch) -> None:
        """Predict one batch, count it for the gate, send each row to its range's pipe and the export."""
        from mlbatch.backends.appdb import key_ranges

        keys = batch.column("entity_key")
        scores = self.booster.inplace_predict(_matrix(batch))
        pred = _prediction_batch(keys, scores)
        self.stats["null_keys"] += keys.null_count
        self.stats["bad_scores"] += int(np.count_nonzero(~((scores >= 0) & (scores <= 1))))
        self.checksum.update(pred)
        which = key_ranges.range_of(keys, self.splits)
        for r in np.unique(which):
            part = pred if len(self.ranges) == 1 else pred.filter(pa.array(which == r))
            self.pipes[int(r)].put(_tsv(part))
        self.exports.put(pred.append_column("ds", pa.repeat(pa.scalar(self.day, pa.date32()), len(keys))))

    @staticmethod
    def writer(pipe: Any) -> Callable[[Any], None]:
        def write(out: Any) -> None:
            try:
                while (buf := pipe.get()) is not _END:
                    out.write(buf)
            except BaseException:
                while pipe.get() is not _END:  # keep the producer unblocked; the load reports the error
                    pass
                raise

        return write

    def gate_then_log_row(self) -> dict[str, Any]:
        """After the load, before the day goes live: the prediction gate decides."""
        from mlbatch.maths import gates

        self.finish()
        self.producer.join()
        if self.failure:
            raise self.failure[0]
        try:
            gates.evaluate(
                f"{MODEL}.predictions",
                [
                    gates.equal("rows_equal_scoring_input", self.checksum.rows, self.expected),
                    gates.equal("null_keys", self.stats["null_keys"], 0),
                    gates.equal("scores_out_of_range", self.stats["bad_scores"], 0),
                ],
            )
            self.gate_ok.append(True)
        finally:
            self.verdict.set()
        return _log_row(self.checksum.rows, self.checksum.hexdigest())


def run_naive(work: Path, db_url: str) -> int:
    """What a team writes first: everything in one DataFrame, DMatrix predict, to_sql."""
    import pandas as pd
    import xgboost as xgb
    from mlbatch.features.reader import read_manifest
    from sqlalchemy import create_engine

    manifest = read_manifest(None, (work / "manifest").as_uri())
    df = pd.concat([pd.read_parquet(e.url.removeprefix("file://")) for e in manifest.entries], ignore_index=True)
    scores = _booster(work).predict(xgb.DMatrix(df[feature_names()]))
    out = pd.DataFrame(
        {
            "entity_key": df["entity_key"],
            "ds": DS,
            "model_version": VERSION,
            "label": np.where(scores >= 0.5, CLASSES[1], CLASSES[0]),
            "score": scores.astype(np.float64),
        }
    )
    _fresh_table(db_url, "bench_naive")
    live, stage = "bench_naive_predictions", "bench_naive_predictions__new"
    engine = create_engine(db_url)
    out.to_sql(stage, engine, if_exists="replace", index=False, chunksize=10_000)
    with engine.begin() as conn:  # what an application can read by key, swapped in at once
        conn.exec_driver_sql(f"ALTER TABLE `{stage}` ADD PRIMARY KEY (entity_key)")
        conn.exec_driver_sql(f"RENAME TABLE `{live}` TO `{live}__old`, `{stage}` TO `{live}`")
        conn.exec_driver_sql(f"DROP TABLE `{live}__old`")
    engine.dispose()
    return len(out)


def run_read(work: Path, db_url: str) -> int:
    from mlbatch.features.reader import iter_batches

    return sum(b.num_rows for b in iter_batches((work / "manifest").as_uri(), threads=2, batch_rows=BATCH_ROWS))


def run_predict(work: Path, db_url: str) -> tuple[int, Callable[[], int]]:
    """Predict alone: the features are loaded first (not timed), then every batch is scored."""
    from mlbatch.features.reader import iter_batches

    matrices = [_matrix(b) for b in iter_batches((work / "manifest").as_uri(), threads=2, batch_rows=BATCH_ROWS)]
    booster = _booster(work)
    return 0, lambda: sum(len(booster.inplace_predict(m)) for m in matrices)


def _publish_parts(work: Path, ds: str = DS) -> tuple[list[Any], int]:
    """The day as the publish loads it, cut into the ``LOAD_SESSIONS`` key ranges the bare load
    uses too (same rows, same sessions): TSV files in key order, written once per day and reused
    by every publish and load path (not timed), as load sources with their key bounds."""
    from mlbatch.backends.appdb.mysql_load import LoadSource
    from mlbatch.features.reader import read_manifest

    rows = read_manifest(None, (work / "manifest").as_uri()).record_count
    first = 10_000_000  # the keys prepare() writes: first, first + 1, ...
    cuts = [rows * i // LOAD_SESSIONS for i in range(LOAD_SESSIONS + 1)]
    sources = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        path = work / f"publish-{ds}-{i}.tsv"
        if not path.exists():
            rng = np.random.default_rng(1 + i)
            with open(path, "wb") as out:
                for start in range(lo, hi, BATCH_ROWS):
                    n = min(BATCH_ROWS, hi - start)
                    keys = pa.array(np.arange(start, start + n, dtype=np.int64) + first)
                    out.write(_tsv(_prediction_batch(keys, rng.random(n)), ds))
        key_from = None if i == 0 else first + lo
        key_to = None if i == LOAD_SESSIONS - 1 else first + hi
        sources.append(LoadSource(path=str(path), key_from=key_from, key_to=key_to))
    return sources, rows


def _publisher(work: Path, db_url: str, mode: str, ds: str, *, drop: bool) -> Callable[[], int]:
    """A publish of ``ds`` in ``mode`` into the bench model's tables (dropped first if ``drop``)."""
    from mlbatch.backends.appdb.mysql_publish import publish_mysql

    sources, rows = _publish_parts(work, ds)
    db, table = _fresh_table(db_url, MODEL, drop=drop)

    def publish() -> int:
        day = date.fromisoformat(ds)
        publish_mysql(db, table, sources, rows, _log_row(rows, "0" * 64, ds), day, mode=mode)
        return rows

    return publish


def run_publish(work: Path, db_url: str, mode: str = "upsert") -> tuple[int, Callable[[], int]]:
    """Publish alone into an empty database: the day's TSV is written first (not timed)."""
    return 0, _publisher(work, db_url, mode, DS, drop=True)


def run_publish_steady(work: Path, db_url: str, mode: str = "upsert") -> tuple[int, Callable[[], int]]:
    """Publish alone in the steady state: the day published first (not timed), then the next day,
    which re-scores every key, is timed."""
    _publisher(work, db_url, mode, DS, drop=True)()
    return 0, _publisher(work, db_url, mode, NEXT_DS, drop=False)


def run_load(work: Path, db_url: str) -> tuple[int, Callable[[], int]]:
    """The publish's ceiling: bare ``LOAD DATA LOCAL INFILE`` of the same TSV, cut into the publish's
    ``LOAD_SESSIONS`` key ranges (the TSV is in key order), one session each, side by side, into
    an empty table keyed like the readers' table."""
    from mlbatch.backends.appdb.mysql_sql import load_data_sql, q
    from sqlalchemy import text

    sources, rows = _publish_parts(work)
    parts = [Path(source.path) for source in sources]
    db, table = _fresh_table(db_url, MODEL)
    ceiling = "bench_load_ceiling"
    with db.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {q(ceiling)}"))
        conn.execute(text(f"CREATE TABLE {q(ceiling)} LIKE {q(table.name)}"))
    engine = db.mysql_engine(local_files=True)

    def load(part: Path) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(load_data_sql(ceiling), (str(part),))

    def run() -> int:
        threads = [threading.Thread(target=load, args=(part,)) for part in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with engine.connect() as conn:
            loaded = conn.execute(text(f"SELECT COUNT(*) FROM {q(ceiling)}")).scalar_one()
        if loaded != rows:
            raise RuntimeError(f"bare LOAD DATA loaded {loaded:,} rows of {rows:,}")
        return rows

    return 0, run


PATHS: dict[str, Callable[..., Any]] = {
    "optimised": run_optimised,
    "naive": run_naive,
    "read": run_read,
    "predict": run_predict,
    "publish": run_publish,
    "publish_steady": run_publish_steady,
    "load": run_load,
}
MODES = ("upsert", "partitioned")  # publish.mode; a path named "<path>:<mode>" runs in that mode


def worker(path: str, work: Path, db_url: str) -> dict[str, Any]:
    """Run one path in this process and measure it; ``(0, fn)`` results time only ``fn``."""
    # Libraries are imported before the clock starts: the figures compare work, not imports.
    import duckdb  # noqa: F401
    import mlbatch.backends.appdb.mysql_publish  # noqa: F401
    import mlbatch.backends.warehouse.duckdb_warehouse  # noqa: F401
    import mlbatch.features.reader  # noqa: F401
    import pandas  # noqa: F401
    import pymysql  # noqa: F401
    import sqlalchemy  # noqa: F401
    import xgboost  # noqa: F401

    name, _, mode = path.partition(":")
    started = time.perf_counter()
    result = PATHS[name](work, db_url, mode) if mode else PATHS[name](work, db_url)
    if isinstance(result, tuple):
        started = time.perf_counter()
        result = result[1]()
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "rows": result,
        "seconds": round(seconds, 3),
        "rows_per_s": round(result / seconds),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


# --- the parent ---------------------------------------------------------------------------------
def _child(path: str, work: Path, db_url: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.bench", path, str(work), db_url],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench path {path!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (its own figures, so rows/s and RSS stay one run's), and every run's seconds."""
    ordered = sorted(results, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "runs_s": [r["seconds"] for r in results]}


def run(
    rows: int,
    *,
    naive: bool = True,
    repeat: int = 1,
    work: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Prepare N rows, run every path ``repeat`` times (alternating order) against a MariaDB started
    here, and compute the ratios from the medians, for each ``publish.mode``."""
    from devtools.devservers import start_mariadb

    own = work is None
    work = Path(tempfile.mkdtemp(prefix="mlbatch-bench-")) if work is None else work
    per_mode = [f"{path}:{mode}" for mode in MODES for path in ("publish", "publish_steady", "optimised")]
    paths = ["read", "predict", "load", *per_mode, *(["naive"] if naive else [])]
    try:
        log(f"preparing {rows:,} rows × {FEATURES} features in {work}")
        prepare(work, rows)
        server = start_mariadb()
        try:
            runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
            for rep in range(repeat):
                for path in paths if rep % 2 == 0 else paths[::-1]:
                    log(f"running {path} ({rep + 1}/{repeat}) ...")
                    runs[path].append(_child(path, work, server.url))
                    log(f"  {path}: {runs[path][-1]}")
        finally:
            server.stop()
    finally:
        if own:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    results = {path: _median(found) for path, found in runs.items()}
    return {
        "rows": rows,
        "repeat": repeat,
        "naive": results.get("naive"),
        "read": results["read"],
        "predict": results["predict"],
        # The publish's ceiling: bare LOAD DATA of the same TSV with the same sessions, same run.
        "load": results["load"],
        "modes": {mode: _mode_figures(results, mode) for mode in MODES},
    }


def _mode_figures(results: dict[str, dict[str, Any]], mode: str) -> dict[str, Any]:
    """One publish mode's figures: its paths, its speedup over the naive path, its efficiency
    against the slowest component (read, predict, its own publish) and its publish ÷ bare load."""
    optimised, publish = results[f"optimised:{mode}"], results[f"publish:{mode}"]
    components = {"read": results["read"], "predict": results["predict"], "publish": publish}
    slowest = min(components, key=lambda k: components[k]["rows_per_s"])
    naive, load_s = results.get("naive"), results["load"]["seconds"]
    return {
        "optimised": optimised,
        "publish": publish,
        "publish_steady": results[f"publish_steady:{mode}"],
        "ceiling": {"component": slowest, "rows_per_s": components[slowest]["rows_per_s"]},
        "speedup": round(optimised["rows_per_s"] / naive["rows_per_s"], 2) if naive else None,
        "efficiency": round(optimised["rows_per_s"] / components[slowest]["rows_per_s"], 2),
        "publish_over_load": {
            "empty": round(publish["seconds"] / load_s, 2),
            "steady": round(results[f"publish_steady:{mode}"]["seconds"] / load_s, 2),
        },
    }


def main(argv: list[str]) -> None:
    path, work, db_url = argv
    print(json.dumps(worker(path, Path(work), db_url)))


if __name__ == "__main__":
    main(sys.argv[1:])
