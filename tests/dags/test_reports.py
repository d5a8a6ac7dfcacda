"""Run reports and run params at the stage level: a real file store and a SQLite app DB, no Airflow."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends.env import Environment
from mlbatch.maths import drift
from mlbatch.reporting import reports
from mlbatch.spec import load_spec
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext

from tests.support.paths import REPO

VERSION = "20261122-0badcafe"


@pytest.fixture
def env(tmp_path) -> Environment:
    return Environment(
        home=tmp_path,
        appdb_url=f"sqlite:///{tmp_path / 'app.db'}",
        object_store=(tmp_path / "objects").as_uri(),
        warehouse_url=f"duckdb://{tmp_path / 'warehouse.duckdb'}",
        launcher_kind="local",
        specs_dir=REPO / "dags" / "specs",
    )


def _ctx(env: Environment, ds: str = "2026-11-22", **params) -> RunContext:
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    return RunContext(env=env, spec=spec, ds=ds, run_id=f"scheduled__{ds}", dag_id="x", params=params)


def _register(env: Environment, version: str, status: str, reason: str, metrics: dict) -> str:
    prefix = f"models/device_gender/{version}/"
    env.store.put_json(prefix + "metrics.json", metrics)
    env.store.put_json(
        prefix + "lineage.json", {"label_sync_id": "device_gender-20261122T000000-abc123", "ds": "2026-11-22"}
    )
    env.appdb.ensure_schema()
    registry.register(
        env.appdb,
        {
            "model": "device_gender",
            "version": version,
            "family": "xgboost",
            "metric": "roc_auc",
            "value": metrics["roc_auc"],
            "metrics": metrics,
            "artifact_uri": env.store.uri(prefix),
            "lineage": {},
        },
    )
    registry.decide(env.appdb, "device_gender", version, status, reason)
    return env.store.uri(prefix)


def test_training_report_shows_gate_verdicts_curves_confusion_and_lineage(env):
    metrics = {
        "roc_auc": 0.71,
        "n_test": 1000,
        "positive_rate": 0.5,
        "precision": 0.8,
        "recall": 0.6,
        "classes": ["female", "male"],
        "task": "binary",
        "roc_curve": {"fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.7, 1.0]},
    }
    reason = (
        "gate device_gender.model blocked: 1 of 2 checks failed\n"
        "  FAIL roc_auc: observed 0.71, threshold >= 0.75 (candidate x)\n"
        "  ok   roc_auc_vs_production: observed 0.71, threshold >= 0.7"
    )
    uri = _register(env, VERSION, "rejected", reason, metrics)
    ctx = _ctx(env)
    ctx.save_state("train", {"version": VERSION, "artifact_uri": uri})

    out = reports.training_report(ctx)

    assert out == uri + "report.html"
    html = (env.home / "objects" / "models" / "device_gender" / VERSION / "report.html").read_text()
    assert '<b class="fail">rejected</b>' in html
    assert re.search(r'class="fail">FAIL</td>\s*<td>roc_auc: observed 0.71, threshold &gt;= 0.75', html)
    assert re.search(r'class="ok">pass</td>\s*<td>roc_auc_vs_production', html)
    assert "<polyline" in html and "metrics.json roc_curve" in html  # drawn from the curve points
    # Binary confusion matrix derived from the counts: 500 positives, recall 0.6 -> 300 TP, 200 FN;
    # precision 0.8 -> 375 predicted positive -> 75 FP, 425 TN.
    cells = [int(n.replace(",", "")) for n in re.findall(r'<td class="num">([\d,]+)</td>', html.split("Confusion")[1])]
    assert cells[:4] == [425, 75, 200, 300]
    assert "device_gender-20261122T000000-abc123" in html


def test_training_report_embeds_the_job_pngs_and_says_when_there_is_no_plot(env):
    uri = _register(env, VERSION, "production", "ok   roc_auc: observed 0.9, threshold >= 0.75", {"roc_auc": 0.9})
    ctx = _ctx(env)
    ctx.save_state("train", {"version": VERSION, "artifact_uri": uri})
    html = env.store.get_bytes(env.store.key(reports.training_report(ctx))).decode()
    assert "No ROC/PR plot" in html and "Not available" in html
    env.store.put_bytes(f"models/device_gender/{VERSION}/roc.png", b"\x89PNG fake")
    html = env.store.get_bytes(env.store.key(reports.training_report(ctx))).decode()
    assert "data:image/png;base64," in html and "No ROC/PR plot" not in html


def test_training_report_shows_the_top_20_features_by_importance(env):
    from jobs.importance import gain_importance

    uri = _register(env, VERSION, "production", "ok   roc_auc: observed 0.9, threshold >= 0.75", {"roc_auc": 0.9})
    ctx = _ctx(env)
    ctx.save_state("train", {"version": VERSION, "artifact_uri": uri})
    html = env.store.get_bytes(env.store.key(reports.training_report(ctx))).decode()
    assert "wrote no feature_importance.json" in html  # a version trained before the job wrote it

    # 25 features, f24 the most important; the job's own file format (jobs.importance)
    features = [f"f{i:02d}" for i in range(25)]
    gain = {f: float(i + 1) for i, f in enumerate(features)}
    env.store.put_json(f"models/device_gender/{VERSION}/feature_importance.json", gain_importance(gain, gain, features))
    html = env.store.get_bytes(env.store.key(reports.training_report(ctx))).decode()
    section = html.split("<h2>Feature importance</h2>")[1].split("<h2>")[0]
    shown = re.findall(r"<td><code>(f\d\d)</code></td>", section)
    assert shown == [f"f{i:02d}" for i in range(24, 4, -1)]  # the top 20, most important first
    assert "the top 20 of 25 features" in section and "xgboost gain" in section
    assert 'style="width:200px"' in section and 'style="width:48px"' in section  # f05: 6/25 of the bar

    perm = {
        "method": "permutation",
        "metric": "roc_auc",
        "rows": 1000,
        "repeats": 3,
        "features": [
            {"feature": "x1", "importance": 0.21, "std": 0.01},
            {"feature": "x2", "importance": -0.002, "std": 0.003},
        ],
    }
    env.store.put_json(f"models/device_gender/{VERSION}/feature_importance.json", perm)
    html = env.store.get_bytes(env.store.key(reports.training_report(ctx))).decode()
    section = html.split("<h2>Feature importance</h2>")[1].split("<h2>")[0]
    assert "roc_auc drop" in section and "1000 rows, 3 shuffles each" in section and "top 20" not in section
    assert re.search(r"<code>x2</code></td><td class=\"num\">-0.002</td>", section)
    assert 'style="width:0px"' in section  # a negative importance draws no bar


def _write_predictions(ctx: RunContext, scores: np.ndarray) -> None:
    n = len(scores)
    per = -(-n // ctx.spec.score.shards)
    for shard in range(ctx.spec.score.shards):
        s = scores[shard * per : (shard + 1) * per]
        t = pa.table(
            {
                "entity_key": pa.array(range(shard * per, shard * per + len(s)), pa.int64()),
                "label": pa.array(np.where(s >= 0.5, "male", "female")),
                "score": pa.array(s, pa.float64()),
                "model_version": pa.array([VERSION] * len(s)),
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(t, sink)
        ctx.env.store.put_bytes(ctx.shard_key(shard), sink.getvalue().to_pybytes())


def test_scoring_summary_counts_distribution_and_drift_against_an_earlier_day(env):
    rng = np.random.default_rng(0)
    first, second = _ctx(env, "2026-11-20"), _ctx(env, "2026-11-22")
    _write_predictions(first, rng.uniform(0, 1, 5000))
    _write_predictions(second, rng.beta(5, 2, 4000))  # shifted towards 1
    # What the second day's features gate measured against the training data (stages.features).
    gate_kept = {
        "reference": f"training data of {VERSION}",
        "psi": {"age": 0.41},
        "max": {"feature": "age", "psi": 0.41},
    }
    second.save_state("feature_drift", gate_kept)

    reports.scoring_summary(first)
    reports.scoring_summary(second)

    a = json.loads((env.home / "objects" / "predictions" / "device_gender" / "2026-11-20" / "summary.json").read_text())
    b = json.loads((env.home / "objects" / "predictions" / "device_gender" / "2026-11-22" / "summary.json").read_text())
    assert a["rows"] == sum(a["score"]["histogram"]) == sum(a["labels"].values()) == 5000
    assert a["drift"] is None  # no earlier day
    assert a["feature_drift"] is None and b["feature_drift"] == gate_kept  # the first run's gate kept none
    assert b["rows"] == 4000 and b["model_version"] == [VERSION]
    assert 0.0 <= b["score"]["min"] <= b["score"]["quantiles"]["p50"] <= b["score"]["max"] <= 1.0
    assert b["drift"]["reference_ds"] == "2026-11-20"
    assert b["drift"]["score_psi"] > 0.25 and b["drift"]["level"] == "shifted"
    assert b["drift"]["mean_shift"] > 0.15


def test_scoring_summary_streams_and_its_quantiles_are_within_the_stated_resolution(env):
    rng = np.random.default_rng(1)
    ctx = _ctx(env, "2026-11-21")
    scores = np.concatenate([rng.beta(2, 8, 30_000), rng.beta(9, 1, 10_000), [0.0, 1.0]])
    _write_predictions(ctx, scores)
    summary = json.loads(env.store.get_bytes(env.store.key(reports.scoring_summary(ctx))))["score"]
    for name, value in summary["quantiles"].items():
        exact = float(np.quantile(scores, int(name[1:]) / 100))
        assert abs(value - exact) <= summary["quantile_resolution"], (name, value, exact)
    assert summary["min"] == 0.0 and summary["max"] == 1.0
    assert summary["mean"] == pytest.approx(scores.mean(), rel=1e-12)
    assert summary["histogram"] == drift.score_histogram(scores).tolist()


def test_psi_is_zero_for_the_same_distribution():
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)


def test_model_version_param_scores_with_that_version_or_says_which_exist(env):
    from mlbatch.stages.score import resolve_model

    _register(env, VERSION, "production", "ok", {"roc_auc": 0.9})
    other = "20261101-12345678"
    _register(env, other, "retired", "ok", {"roc_auc": 0.88})

    assert resolve_model(_ctx(env, "2026-11-20"))["version"] == VERSION  # production by default
    assert resolve_model(_ctx(env, "2026-11-21", model_version=other))["version"] == other
    with pytest.raises(LookupError) as err:
        resolve_model(_ctx(env, "2026-11-22", model_version="20990101-deadbeef"))
    msg = str(err.value)
    assert "params.model_version '20990101-deadbeef'" in msg and f"{VERSION} (production)" in msg
    assert f"{other} (retired)" in msg
