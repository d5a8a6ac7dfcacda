"""The PyTorch families: preprocessing, hashing, determinism, and the train/score jobs end to end
(``python -m jobs.<x>`` subprocesses on file:// URIs, as the launchers run them)."""

from __future__ import annotations

import json
import zlib
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devtools.synth import RECIPE_CLASSES, _recipes
from tests.support.jobs import features_table, run_job, write_config, write_unload


def test_tabular_encoder_standardises_imputes_and_round_trips() -> None:
    from jobs.families.tabular import TabularEncoder

    train = pa.table(
        {
            "a": pa.array([1.0, 2.0, 3.0, None]),
            "b": pa.array([10, 10, 10, 10], pa.int32()),
            "shop": pa.array(["x", "y", "x", None]),
            "colour": pa.array(["red", "red", "blue", "green"]),
            "day": pa.array([date(2024, 1, 1), date(2024, 1, 3), date(2024, 1, 2), date(2024, 1, 2)]),
        }
    )
    enc = TabularEncoder.fit(train, family="torch_mlp")
    assert enc.numeric == ["a", "b", "day"] and enc.indicators == ["a"]
    assert enc.categorical == {"shop": ["x", "y"], "colour": ["blue", "green", "red"]}
    assert enc.categorical_columns == ["shop", "colour"] and enc.cardinalities == [3, 4]
    assert enc.mean[0] == pytest.approx(2.0) and enc.std[1] == 1.0  # a constant column keeps std 1

    rows = pa.table(
        {
            "a": pa.array([2.0, None, 1e9]),
            "b": pa.array([10, 10, 10], pa.int32()),
            "shop": pa.array(["y", "zzz", None]),
            "colour": pa.array(["red", "blue", "red"]),
            "day": pa.array([date(2024, 1, 2)] * 3),
        }
    )
    # sort_keys, as jobs.io.write_json does: the embeddings' order must not follow the JSON's
    again = TabularEncoder.from_json(json.loads(json.dumps(enc.to_json(), sort_keys=True)))
    assert again.categorical_columns == ["shop", "colour"]
    x = again.numeric_matrix(rows)
    assert x.shape == (3, 4) and x.dtype == np.float32
    assert x[0, 0] == 0.0 and x[1, 0] == 0.0 and x[2, 0] == 8.0  # mean; missing -> mean; clipped
    assert x[:, 3].tolist() == [0.0, 1.0, 0.0]  # the missing indicator of "a"
    codes = again.category_codes(rows)
    assert codes[:, 0].tolist() == [2, 0, 0] and codes[:, 1].tolist() == [3, 1, 3]  # unseen, null: 0

    with pytest.raises(ValueError, match=r"feature types changed since training: 'shop' is int64"):
        again.check_schema(rows.set_column(2, "shop", pa.array([1, 2, 3])).schema, "part-0.parquet")


def test_hashed_tokens_are_stable_unigrams_and_bigrams() -> None:
    from jobs.families.torch_text import hashed_tokens

    table = pa.table({"title": ["ICED Matcha  Latte!", None, "", "iced matcha latte", "Crème brûlée"]})
    ids, offsets = hashed_tokens(table, ["title"], 2**18, bigrams=True)
    assert offsets.tolist() == [0, 5, 5, 5, 10]  # 3 words + 2 bigrams; null and "" are empty bags
    assert ids[0:5].tolist() == ids[5:10].tolist()  # case and punctuation do not matter
    expected = {zlib.crc32(t.encode()) % 2**18 for t in ("iced", "matcha", "latte", "iced matcha", "matcha latte")}
    assert set(ids[0:5].tolist()) == expected  # a stable hash, never Python's salted hash()
    assert {zlib.crc32(t.encode()) % 2**18 for t in ("crème", "brûlée", "crème brûlée")} == set(ids[10:].tolist())
    uni, _ = hashed_tokens(table, ["title"], 2**18, bigrams=False)
    assert len(uni) == 8


def test_mlp_training_is_deterministic_on_cpu() -> None:
    from jobs.families.torch_mlp import TorchMLPFamily

    table, truth = features_table(n=1200, seed=4)
    x = table.drop_columns(["device_id"])
    kw = {"classes": ["female", "male"], "params": {"max_epochs": 3, "hidden": [16]}, "seed": 3, "metric": "roc_auc"}
    runs = [TorchMLPFamily.fit(x.slice(0, 800), truth[:800], x.slice(800, 200), truth[800:1000], **kw) for _ in "ab"]
    p = [m.predict_proba(x.slice(1000)) for m in runs]
    assert p[0].shape == (200, 2) and np.allclose(p[0].sum(axis=1), 1.0)
    assert np.array_equal(p[0], p[1])
    assert runs[0].meta["device_trained"] == "cpu" and runs[0].meta["precision_trained"] == "float32"


def _train_and_score(tmp: Path, table: pa.Table, labels: pa.Table, config: str) -> tuple[Path, pa.Table]:
    manifest = write_unload(table, tmp / "unload")
    pq.write_table(labels, tmp / "labels.parquet")
    out = (tmp / "model").as_uri() + "/"
    proc = run_job(
        "train",
        "--config",
        config,
        "--features",
        manifest,
        "--labels",
        (tmp / "labels.parquet").as_uri(),
        "--output",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    pred = tmp / "pred.parquet"
    proc = run_job(
        "score",
        *("--model", out, "--features", manifest, "--output", pred.as_uri()),
        *("--ds", "2026-11-22", "--model-version", "v1", "--batch-size", "1000"),
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / "model", pq.read_table(pred)


def _common_artifacts(model_dir: Path) -> dict:
    names = {p.name for p in model_dir.iterdir()}
    assert {"model.pt", "preprocessing.json", "model_meta.json", "metrics.json", "feature_schema.json"} <= names
    assert {"lineage.json", "roc.png", "pr.png", "_SUCCESS"} <= names
    assert (model_dir / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = json.loads((model_dir / "lineage.json").read_text())
    assert lineage["torch_version"].startswith("2.") and lineage["device_trained"] == "cpu"
    return json.loads((model_dir / "metrics.json").read_text())


def test_torch_mlp_job_binary(tmp_path: Path) -> None:
    table, truth = features_table(n=3000, seed=2)
    labels = pa.table({"entity_key": table.column("device_id"), "label": [["female", "male"][t] for t in truth]})
    config = write_config(
        tmp_path / "config.json", ["female", "male"], family="torch_mlp", params={"max_epochs": 8, "hidden": [32]}
    )
    model_dir, preds = _train_and_score(tmp_path, table, labels, config)
    metrics = _common_artifacts(model_dir)
    assert metrics["roc_auc"] > 0.75 and metrics["value"] == metrics["roc_auc"]
    for k in ("pr_auc", "log_loss", "f1", "precision", "recall"):
        assert 0 < metrics[k] < 1.5
    assert len(metrics["curves"]["roc"]["tpr"]) == 101 and metrics["curves"]["roc"]["tpr"][-1] == 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["n_test"]
    prep = json.loads((model_dir / "preprocessing.json").read_text())
    assert prep["categorical"]["brand"] == ["apple", "nokia", "samsung", "xiaomi"] and "x1" in prep["indicators"]

    assert preds.num_rows == 3000 and preds.schema.field("entity_key").type == pa.int64()
    scores = preds.column("score").to_numpy()
    labels_out = np.array(preds.column("label").to_pylist())
    assert ((scores >= 0.5) == (labels_out == "male")).all()


def test_torch_text_job_on_synthetic_recipes(tmp_path: Path) -> None:
    recipes, truth = _recipes(np.random.default_rng(5), 6000, date(2026, 11, 22))
    table = recipes.select(["recipe_id", "title", "n_ingredients", "prep_minutes", "calories"])
    labels = pa.table({"entity_key": truth.column("recipe_id"), "label": truth.column("category")})
    config = write_config(
        tmp_path / "config.json",
        list(RECIPE_CLASSES),
        model="recipe_category",
        entity_key="recipe_id",
        family="torch_text",
        metric="macro_f1",
        params={"buckets": 2**16, "max_epochs": 8},
    )
    model_dir, preds = _train_and_score(tmp_path, table, labels, config)
    metrics = _common_artifacts(model_dir)
    assert metrics["task"] == "multiclass" and metrics["macro_f1"] > 0.8 and metrics["accuracy"] > 0.8
    assert set(metrics["per_class"]) == set(RECIPE_CLASSES)
    assert all(0.5 < c["roc_auc"] <= 1 for c in metrics["per_class"].values())
    assert set(metrics["curves"]) == set(RECIPE_CLASSES)
    meta = json.loads((model_dir / "model_meta.json").read_text())
    assert meta["text"] == {"text_columns": ["title"], "buckets": 2**16, "bigrams": True}
    assert 1 <= meta["best_iteration"] <= meta["epochs_run"] <= 8

    assert preds.num_rows == 6000 and set(preds.column("label").to_pylist()) <= set(RECIPE_CLASSES)
    agree = np.mean(np.array(preds.column("label").to_pylist()) == np.array(truth.column("category").to_pylist()))
    assert agree > 0.8  # mostly rows it trained on; a sanity check that scoring uses the same tokens


def test_torch_text_rejects_features_without_text() -> None:
    from jobs.families.torch_text import TorchTextFamily
    from jobs.io import JobInputError

    table, truth = features_table(n=100, seed=1)
    x = table.drop_columns(["device_id", "brand"])
    with pytest.raises(JobInputError, match=r"torch_text: no text \(string\) column among the features \['x1'"):
        TorchTextFamily.fit(x, truth, x, truth, classes=["female", "male"], params={}, seed=1, metric="roc_auc")
    with pytest.raises(JobInputError, match=r"torch_text: unknown params \['embedding_dim'\]"):
        TorchTextFamily.fit(x, truth, x, truth, classes=["a", "b"], params={"embedding_dim": 8}, seed=1, metric="f1")
