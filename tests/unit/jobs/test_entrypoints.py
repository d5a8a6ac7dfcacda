"""The container entrypoints, run as the launchers run them: ``python -m jobs.<x>`` subprocesses
on file:// URIs, against a synthetic feature set with a learnable signal."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import io
from jobs.cpus import cores
from tests.support.jobs import N, features_table, run_job, write_config, write_labels, write_unload


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("jobs")
    table, truth = features_table()
    manifest = write_unload(table, tmp / "unload")
    classes = ["female", "male"]
    labels = write_labels(tmp / "labels.parquet", np.arange(1000, 4000), [classes[t] for t in truth[:3000]])
    config = write_config(tmp / "config.json", classes)
    out = (tmp / "model").as_uri() + "/"
    proc = run_job("train", "--config", config, "--features", manifest, "--labels", labels, "--output", out)
    assert proc.returncode == 0, proc.stderr
    return {
        "tmp": tmp,
        "table": table,
        "manifest": manifest,
        "labels": labels,
        "config": config,
        "out": out,
        "model_dir": tmp / "model",
        "proc": proc,
    }


def test_train_writes_artifacts_and_marker_last(trained: dict) -> None:
    model_dir: Path = trained["model_dir"]
    names = {
        "model.json",
        "model_meta.json",
        "metrics.json",
        "feature_schema.json",
        "lineage.json",
        "roc.png",
        "pr.png",
        "_SUCCESS",
    }
    assert names <= {p.name for p in model_dir.iterdir()}
    assert (model_dir / "pr.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in model_dir.iterdir() if ".tmp-" in p.name]
    marker_mtime = (model_dir / "_SUCCESS").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker_mtime for p in model_dir.iterdir())

    summary = json.loads(trained["proc"].stdout.strip().splitlines()[-1])
    assert summary["status"] == "trained" and summary["rows"] == 3000

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.75
    assert metrics["value"] == metrics["roc_auc"]
    for k in ("pr_auc", "log_loss", "accuracy", "f1", "precision", "recall", "best_iteration"):
        assert k in metrics
    assert metrics["n_train"] + metrics["n_valid"] + metrics["n_test"] == 3000
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_test"]
    roc, pr = metrics["curves"]["roc"], metrics["curves"]["pr"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(pr["recall"]) == len(pr["precision"]) == 101
    assert roc["tpr"] == sorted(roc["tpr"]) and pr["precision"] == sorted(pr["precision"], reverse=True)

    schema = json.loads((model_dir / "feature_schema.json").read_text())
    assert schema == [
        {"name": "x1", "type": "double"},
        {"name": "x2", "type": "float"},
        {"name": "n_apps", "type": "int32"},
        {"name": "brand", "type": "string"},
    ]
    meta = json.loads((model_dir / "model_meta.json").read_text())
    assert meta["family"] == "xgboost" and meta["classes"] == ["female", "male"]
    assert meta["features"] == ["x1", "x2", "n_apps", "brand"]
    assert meta["categorical"] == {"brand": ["apple", "nokia", "samsung", "xiaomi"]}

    lineage = json.loads((model_dir / "lineage.json").read_text())
    assert lineage["label_sync_id"] == 42
    assert lineage["features_manifest"] == trained["manifest"]
    assert lineage["labels"] == trained["labels"]
    assert lineage["rows"]["features"] == N and lineage["rows"]["matched"] == 3000
    assert lineage["code_version"] == "test-sha" and lineage["xgboost_version"]
    assert lineage["image"] is None  # run from the checkout, not from an image
    assert lineage["params"]["max_depth"] == 4


def test_train_rerun_is_a_noop(trained: dict) -> None:
    marker = trained["model_dir"] / "_SUCCESS"
    before = {p.name: p.stat().st_mtime_ns for p in trained["model_dir"].iterdir()}
    proc = run_job(
        "train",
        "--config",
        trained["config"],
        "--features",
        trained["manifest"],
        "--labels",
        trained["labels"],
        "--output",
        trained["out"],
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "already_done"
    assert "not retraining" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in trained["model_dir"].iterdir()} == before
    assert marker.exists()


def test_score_shards_cover_every_row_once(trained: dict) -> None:
    tmp: Path = trained["tmp"]
    outputs = []
    for shard in (0, 1):
        out = (tmp / "pred" / f"part-{shard}.parquet").as_uri()
        proc = run_job(
            "score",
            "--model",
            trained["out"],
            "--features",
            trained["manifest"],
            "--output",
            out,
            "--ds",
            "2024-05-01",
            "--model-version",
            "v1",
            "--shard",
            str(shard),
            "--shards",
            "2",
            env={"MLBATCH_JOB_VCPU": "1"} if shard == 0 else {},
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["rows"] == N // 2 and summary["rows_per_s"] > 0
        # The launcher's allotment sizes the job's pools (1 CPU), else the cores it may run on.
        assert summary["threads"] == (1 if shard == 0 else cores())
        assert json.loads((tmp / "pred" / f"part-{shard}.parquet._SUCCESS").read_text())["rows"] == N // 2
        outputs.append(pq.read_table(tmp / "pred" / f"part-{shard}.parquet"))
    preds = pa.concat_tables(outputs)
    assert preds.schema.names == ["entity_key", "label", "score", "ds", "model_version"]
    assert preds.schema.field("entity_key").type == pa.int64()
    assert preds.schema.field("score").type == pa.float64()
    keys = preds.column("entity_key").to_numpy()
    assert sorted(keys.tolist()) == trained["table"].column("device_id").to_pylist()
    scores = preds.column("score").to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert set(preds.column("label").to_pylist()) <= {"female", "male"}
    assert set(preds.column("ds").to_pylist()) == {"2024-05-01"}
    assert set(preds.column("model_version").to_pylist()) == {"v1"}
    # label and score agree: binary score is P(classes[1])
    labels = np.array(preds.column("label").to_pylist())
    assert ((scores >= 0.5) == (labels == "male")).all()

    # idempotent: a second run of a finished shard does not rescore
    proc = run_job(
        "score",
        "--model",
        trained["out"],
        "--features",
        trained["manifest"],
        "--output",
        (tmp / "pred" / "part-0.parquet").as_uri(),
        "--ds",
        "2024-05-01",
        "--model-version",
        "v1",
        "--shard",
        "0",
        "--shards",
        "2",
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "already_done"


def test_score_shard_without_entries_writes_empty_parquet(trained: dict) -> None:
    out = trained["tmp"] / "pred" / "empty.parquet"
    proc = run_job(
        "score",
        "--model",
        trained["out"],
        "--features",
        trained["manifest"],
        "--output",
        out.as_uri(),
        "--ds",
        "2024-05-01",
        "--model-version",
        "v1",
        "--shard",
        "3",
        "--shards",
        "4",
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.field("entity_key").type == pa.int64()
    assert table.schema.names == ["entity_key", "label", "score", "ds", "model_version"]


def test_score_missing_feature_column_fails(trained: dict) -> None:
    tmp: Path = trained["tmp"]
    manifest = write_unload(trained["table"].drop_columns(["n_apps"]), tmp / "unload_missing", parts=1)
    out = tmp / "pred" / "bad.parquet"
    proc = run_job(
        "score",
        "--model",
        trained["out"],
        "--features",
        manifest,
        "--output",
        out.as_uri(),
        "--ds",
        "2024-05-01",
        "--model-version",
        "v1",
    )
    assert proc.returncode == 2
    assert "missing ['n_apps']" in proc.stderr and "0000_part_00.parquet" in proc.stderr
    assert not out.exists() and not Path(str(out) + "._SUCCESS").exists()


def test_multiclass_writes_per_class_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3000
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    cls = np.where(x1 > 0.5, 2, np.where(x2 > 0, 1, 0))
    table = pa.table(
        {
            "device_id": np.arange(n, dtype=np.int64),
            "x1": x1,
            "x2": x2,
            "shop": pa.array(np.array(["a", "b", "c"])[cls].tolist()),
        }
    )
    manifest = write_unload(table, tmp_path / "unload")
    classes = ["main", "side", "dessert"]
    # Keys as strings: labels snapshots may hold them either way.
    pq.write_table(
        pa.table({"entity_key": [str(k) for k in range(n)], "label": [classes[c] for c in cls]}),
        tmp_path / "labels.parquet",
    )
    config = write_config(tmp_path / "config.json", classes, metric="macro_f1")
    out = (tmp_path / "model").as_uri() + "/"
    proc = run_job(
        "train",
        "--config",
        config,
        "--features",
        manifest,
        "--labels",
        (tmp_path / "labels.parquet").as_uri(),
        "--output",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["task"] == "multiclass" and metrics["macro_f1"] > 0.8
    assert set(metrics["per_class"]) == set(classes)
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_class"]["side"])
    assert sum(c["support"] for c in metrics["per_class"].values()) == metrics["n_test"]
    assert all(c["roc_auc"] > 0.8 for c in metrics["per_class"].values()) and metrics["roc_auc"] > 0.8
    assert set(metrics["curves"]) == set(classes) and (tmp_path / "model" / "roc.png").exists()

    pred = tmp_path / "pred.parquet"
    proc = run_job(
        "score",
        "--model",
        out,
        "--features",
        manifest,
        "--output",
        pred.as_uri(),
        "--ds",
        "2024-05-01",
        "--model-version",
        "v1",
    )
    assert proc.returncode == 0, proc.stderr
    preds = pq.read_table(pred)
    assert preds.num_rows == n and set(preds.column("label").to_pylist()) <= set(classes)
    scores = preds.column("score").to_numpy()
    assert (scores >= 1 / 3 - 1e-9).all() and (scores <= 1).all()  # P(argmax class)


@pytest.fixture()
def small(tmp_path: Path) -> dict[str, object]:
    table, truth = features_table(n=400, seed=1)
    return {
        "tmp": tmp_path,
        "table": table,
        "truth": truth,
        "config": write_config(tmp_path / "c.json", ["female", "male"]),
    }


def _train(small: dict, manifest: str, labels: str) -> subprocess.CompletedProcess[str]:
    out = (small["tmp"] / "model").as_uri() + "/"
    return run_job("train", "--config", small["config"], "--features", manifest, "--labels", labels, "--output", out)


def test_train_fails_when_no_label_matches(small: dict) -> None:
    manifest = write_unload(small["table"], small["tmp"] / "unload")
    labels = write_labels(small["tmp"] / "l.parquet", np.arange(90_000, 90_100), ["male", "female"] * 50)
    proc = _train(small, manifest, labels)
    assert proc.returncode == 2
    assert "0 of 100 labels matched a feature row by device_id" in proc.stderr
    assert not (small["tmp"] / "model" / "_SUCCESS").exists()


def test_train_fails_on_manifest_count_mismatch(small: dict) -> None:
    manifest = write_unload(small["table"], small["tmp"] / "unload", lie=5)
    labels = write_labels(small["tmp"] / "l.parquet", np.arange(1000, 1300), ["male", "female"] * 150)
    proc = _train(small, manifest, labels)
    assert proc.returncode == 2
    assert "0000_part_00.parquet: holds 200 rows but the manifest's record_count says 205" in proc.stderr


def test_train_fails_on_unknown_label_and_missing_column(small: dict) -> None:
    manifest = write_unload(small["table"], small["tmp"] / "unload")
    labels = write_labels(small["tmp"] / "l.parquet", np.arange(1000, 1300), ["male", "Female"] * 150)
    proc = _train(small, manifest, labels)
    assert proc.returncode == 2
    assert "150 rows have a label not in classes" in proc.stderr and "'Female' (150)" in proc.stderr

    pq.write_table(pa.table({"device_id": [1000], "label": ["male"]}), small["tmp"] / "l2.parquet")
    proc = _train(small, manifest, (small["tmp"] / "l2.parquet").as_uri())
    assert proc.returncode == 2 and "missing column(s) ['entity_key']" in proc.stderr


def test_train_fails_with_too_few_labels(small: dict) -> None:
    manifest = write_unload(small["table"], small["tmp"] / "unload")
    labels = write_labels(small["tmp"] / "l.parquet", np.arange(1000, 1020), ["male", "female"] * 10)
    proc = _train(small, manifest, labels)
    assert proc.returncode == 2 and "only 20 of 20 labels matched" in proc.stderr


def test_read_manifest_table_checks_counts_in_process(tmp_path: Path) -> None:
    table, _ = features_table(n=100)
    manifest = write_unload(table, tmp_path / "ok")
    assert io.read_manifest_table(manifest).num_rows == 100
    bad = write_unload(table, tmp_path / "bad", lie=1)
    with pytest.raises(ValueError, match=r"0000_part_00\.parquet: holds 50 rows .* says 51"):
        io.read_manifest_table(bad)
    fs, path = io.filesystem_for("s3://bucket/key/x.parquet")
    assert path == "bucket/key/x.parquet" and fs.type_name == "s3"


def test_device_detection_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.families import xgboost_family as fam

    monkeypatch.setenv("MLBATCH_XGB_DEVICE", "")
    fam.detect_device.cache_clear()
    assert fam.detect_device() in ("cpu", "cuda")  # the probe runs and never raises
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    fam.detect_device.cache_clear()
    assert fam.detect_device() == "cpu"
    fam.detect_device.cache_clear()


def test_provenance_is_the_jobs_own_image_or_its_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.train import provenance

    monkeypatch.setenv("MLBATCH_IMAGE", "mlbatch/train:0123456789abcdef")
    monkeypatch.setenv("MLBATCH_CODE_VERSION", "0123456789abcdef")
    assert provenance() == {"image": "mlbatch/train:0123456789abcdef", "code_version": "0123456789abcdef"}
    monkeypatch.delenv("MLBATCH_IMAGE")
    monkeypatch.delenv("MLBATCH_CODE_VERSION")
    local = provenance()
    assert local["image"] is None and re.fullmatch(r"source-[0-9a-f]{16}", local["code_version"])
    assert provenance() == local  # stable for the same sources
