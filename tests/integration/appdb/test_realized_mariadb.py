"""The realized-performance stage on real servers (MariaDB for Aurora MySQL, PostgreSQL for Aurora
PostgreSQL): upsert, rerun, republished day, labels left out because the version trained on them,
the degraded flag."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlbatch.backends.appdb import schema
from mlbatch.backends.env import Environment
from mlbatch.spec import load_spec
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.realized import flags, history, realized_performance
from sqlalchemy import select

from tests.support.appdb import env_from_variables
from tests.support.paths import REPO

DS = "2026-11-22"


@pytest.fixture
def env(appdb_url, tmp_path, monkeypatch) -> Environment:
    monkeypatch.delenv("AIRFLOW_CONN_MLBATCH_ALERTS", raising=False)
    e = env_from_variables(monkeypatch, tmp_path, appdb_url)
    e.appdb.ensure_schema()
    yield e
    e.appdb.dispose()


def _parquet(env: Environment, key: str, table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return env.store.put_bytes(key, sink.getvalue().to_pybytes())


def _publish(env: Environment, spec, version: str, run_id: str, keys: np.ndarray, score: np.ndarray) -> None:
    """What the score DAG leaves: the run's shard and the publish log row."""
    ctx = RunContext(env=env, spec=spec, ds=DS, run_id=run_id)
    label = np.where(score >= 0.5, "male", "female")
    _parquet(
        env,
        ctx.shard_key(0),
        pa.table({"entity_key": pa.array(keys, pa.int64()), "label": label.tolist(), "score": score}),
    )
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    row = {
        "model": spec.name,
        "ds": date.fromisoformat(DS),
        "model_version": version,
        "rows_published": len(keys),
        "checksum": "x",
        "run_id": run_id,
        "published_at": now,
    }
    with env.appdb.begin() as conn:
        env.appdb.upsert(conn, schema.publish_log, [row], update=["model_version", "run_id", "published_at"])


def _register(env: Environment, version: str, sync_id: str) -> None:
    registry.register(
        env.appdb,
        {
            "model": "device_gender",
            "version": version,
            "family": "xgboost",
            "metric": "roc_auc",
            "value": 0.86,
            "metrics": {"roc_auc": 0.86},
            "artifact_uri": env.store.uri(f"models/device_gender/{version}/"),
            "lineage": {"label_sync_id": sync_id},
        },
    )


def test_realized_performance(env: Environment, tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "dags/specs/device_gender.yaml").read_text())
    raw["score"]["shards"] = 1
    raw["monitoring"] = {"min_rows": 100}
    path = tmp_path / "device_gender.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    rng = np.random.default_rng(3)
    n = 3_000
    keys = np.arange(1, n + 1)
    truth = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.0 * (truth - 0.5))))

    # Training labels: keys 1..1000 (the snapshot of sync s1); late labels: 1001..3000.
    snap = _parquet(
        env,
        "labels/device_gender/s1.parquet",
        pa.table({"entity_key": pa.array(keys[:1000], pa.int64()), "label": ["x"] * 1000}),
    )
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with env.appdb.begin() as conn:
        conn.execute(
            schema.label_syncs.insert().values(
                sync_id="s1",
                model="device_gender",
                started_at=now,
                content_hash="h",
                verdict="applied",
                snapshot_uri=snap,
            )
        )
        conn.execute(
            schema.labels.insert(),
            [
                {
                    "model": "device_gender",
                    "entity_key": str(k),
                    # trained-on keys carry inverted labels: counted, they would wreck the metric
                    "label": ("female", "male")[t if k > 1000 else 1 - t],
                    "sync_id": "s1",
                    "updated_at": now,
                }
                for k, t in zip(keys, truth, strict=True)
            ],
        )
    _register(env, "v1", "s1")
    registry.decide(env.appdb, "device_gender", "v1", "production", "gate passed")
    _publish(env, spec, "v1", "score-run-1", keys, score)

    ctx = RunContext(env=env, spec=spec, ds="2026-11-24", run_id="labels-run")
    ctx.save_state("labels_check", {"sync_id": "s2"})
    first = realized_performance(ctx)
    [row] = history(env.appdb, "device_gender")
    late = keys > 1000
    from mlbatch.maths.realized_metrics import roc_auc

    assert row["n_labelled"] == 2_000 and row["model_version"] == "v1" and row["label_sync_id"] == "s2"
    assert row["value"] == pytest.approx(roc_auc(truth[late], score[late]))
    assert row["ci_low"] < row["value"] < row["ci_high"] and row["value"] > 0.75
    assert first["degraded"] == [] and flags(env.appdb, "device_gender") == {}

    # A rerun replaces the row.
    realized_performance(ctx)
    assert [r["value"] for r in history(env.appdb, "device_gender")] == [row["value"]]

    # The day republished by a worse version v2 (trained on the same snapshot): v1's row goes,
    # v2's is below the gate on >= min_rows rows: flagged, status unchanged, no webhook configured.
    _register(env, "v2", "s1")
    _publish(env, spec, "v2", "score-run-2", keys, 1 - score)
    result = realized_performance(ctx)
    [row2] = history(env.appdb, "device_gender")
    assert row2["model_version"] == "v2" and row2["value"] == pytest.approx(1 - row["value"])
    assert result["degraded"] == [{"ds": DS, "model_version": "v2"}] and result["alerted"] is False
    assert "degraded" in flags(env.appdb, "device_gender")["v2"]
    with env.appdb.connect() as conn:
        status = conn.execute(select(schema.model_versions.c.status).where(schema.model_versions.c.version == "v2"))
        assert status.scalar() == "candidate"
