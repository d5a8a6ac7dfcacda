"""The score DAG reads the day's predictions from the object store three times: the prediction
gate's pass (which keeps the summary's figures and the publish's key sample), the publish's and
the export's. The summary and the export gate read none of it, and the publish does not read the
keys again to cut its key ranges (MySQL) nor the footers to count the rows.

Counted at the object store's registry (devtools/counting_fs.py): every byte the package
reads, per file.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq
from mlbatch.reporting.summary import scoring_summary
from mlbatch.stages.publish import Export, export_gate, publish
from mlbatch.stages.score import predictions_gate

from devtools.counting_fs import count_reads
from tests.support.publish import fabricate, table_rows

DS = "2026-11-21"
TAIL_GUESS = 64 * 1024  # pyarrow reads a file's last 64 KiB at once to find its footer


def test_the_day_is_read_once_by_the_gate_once_by_the_publish_and_once_by_the_export(env, spec):
    ctx = fabricate(env, spec, DS, list(range(120_000)))
    shards = {env.store.uri(ctx.shard_key(s)).removeprefix("file://") for s in range(spec.score.shards)}
    footers = sum(pq.ParquetFile(p).metadata.serialized_size + 8 for p in shards)
    data = sum(os.path.getsize(p) for p in shards)
    per_step = {}
    with count_reads() as read:
        for name, step in [
            ("predictions_gate", predictions_gate),
            ("publish", publish),
            ("scoring_summary", scoring_summary),
            ("export", lambda c: Export(c).run()),
            ("export_gate", export_gate),
        ]:
            before = sum(read[p] for p in shards)
            step(ctx)
            per_step[name] = sum(read[p] for p in shards) - before
    one_pass = data + footers + TAIL_GUESS * len(shards)  # the data, its footer, the footer's guess
    passes = {name: round(b / data, 3) for name, b in per_step.items()}
    assert [name for name, b in per_step.items() if b] == ["predictions_gate", "publish", "export"], passes
    assert all(b <= one_pass for b in per_step.values()), (passes, one_pass / data)
    assert sum(per_step.values()) <= 3 * one_pass, passes
    assert len(table_rows(env)) == 120_000  # and the day was published
