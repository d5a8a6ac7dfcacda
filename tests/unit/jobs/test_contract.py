"""Both sides of jobs/contract.py agree: what the spec accepts, the train stage builds and the jobs
read and write are the same names and the same config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import yaml
from mlbatch.spec import SpecError, Train, load_spec
from mlbatch.stages.train import SEED, job_config

from jobs import contract
from jobs.contract import ConfigError, ModelMeta, Split, TrainConfig
from jobs.families import FAMILIES as FAMILY_CLASSES
from jobs.io import JobInputError
from jobs.metrics import binary_metrics, multiclass_metrics
from jobs.train import load_config
from tests.support.paths import REPO

SPECS = sorted((REPO / "dags" / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_the_config_the_train_stage_builds_is_the_one_the_job_reads(spec_path: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_path)
    built = job_config(spec, "20261120-0badcafe", {"label_sync_id": "s1", "ds": "2026-11-20"})
    path = tmp_path / "job_config.json"
    path.write_text(json.dumps(built.to_dict()))  # as the stage stores it

    read = load_config(path.as_uri())  # as the job reads it

    assert read == built
    assert (read.family, read.metric, read.classes, read.seed) == (
        spec.train.family,
        spec.train.gate.metric,
        spec.labels.classes,
        SEED,
    )


def test_every_family_the_spec_accepts_is_one_the_jobs_train() -> None:
    accepted = set(get_args(Train.model_fields["family"].annotation))
    assert accepted == set(contract.FAMILIES) == set(FAMILY_CLASSES)


def test_every_metric_the_spec_accepts_is_one_the_jobs_write() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.4, len(y)), 0, 1)
    written = binary_metrics(y, p)
    assert all(isinstance(written[m], float) for m in contract.BINARY_METRICS), written.keys()

    y3 = np.array([0, 1, 2] * 20)
    proba = rng.dirichlet([1, 1, 1], len(y3))
    written = multiclass_metrics(y3, proba, ["a", "b", "c"])
    assert all(isinstance(written[m], float) for m in contract.MULTICLASS_METRICS), written.keys()


def _spec_with(tmp_path: Path, classes: list[str], metric: str) -> Path:
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["labels"]["classes"] = classes
    raw["train"]["gate"]["metric"] = metric
    path = tmp_path / "device_gender.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("classes", "metrics"),
    [(["a", "b"], contract.BINARY_METRICS), (["a", "b", "c"], contract.MULTICLASS_METRICS)],
)
def test_the_spec_accepts_exactly_the_contracts_metrics(tmp_path: Path, classes: list[str], metrics: tuple) -> None:
    for metric in metrics:
        assert load_spec(_spec_with(tmp_path, classes, metric)).train.gate.metric == metric
    other = next(m for m in (*contract.BINARY_METRICS, *contract.MULTICLASS_METRICS) if m not in metrics)
    with pytest.raises(SpecError, match=f"train.gate.metric '{other}' does not fit"):
        load_spec(_spec_with(tmp_path, classes, other))


GOOD = {"model": "m", "version": "v1", "entity_key": "k", "classes": ["a", "b"], "family": "xgboost"}


def test_defaults_follow_the_task() -> None:
    binary = TrainConfig.parse(GOOD)
    assert (binary.metric, binary.seed, binary.min_rows, binary.split) == ("roc_auc", 0, 50, Split(0.15, 0.15))
    assert TrainConfig.parse({**GOOD, "classes": ["a", "b", "c"]}).metric == "macro_f1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": None}, "missing keys ['model']"),
        ({"metirc": "f1"}, "unknown keys ['metirc']"),
        ({"family": "lightgbm"}, "family must be one of ['xgboost', 'torch_mlp', 'torch_text'], got 'lightgbm'"),
        ({"classes": ["a"]}, "classes must be a list of at least 2 non-empty strings"),
        ({"classes": ["a", "a"]}, "classes are not distinct"),
        ({"metric": "macro_f1"}, "metric must be one of ['roc_auc', 'pr_auc', 'accuracy', 'f1', 'log_loss']"),
        ({"split": {"valid": 0.5, "test": 0.5}}, "split.valid + split.test must be below 1"),
        ({"split": {"valid": 0}}, "split.valid must be a number in (0, 1), got 0"),
        ({"split": {"tset": 0.2}}, "split must be a mapping of valid and/or test"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"min_rows": True}, "min_rows must be an integer >= 0, got True"),
        ({"params": [1]}, "params must be a mapping"),
        ({"version": ""}, "version must be a non-empty string"),
    ],
)
def test_a_bad_config_names_its_field(change: dict, message: str) -> None:
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        TrainConfig.parse(raw)
    assert message in str(err.value)


def test_the_job_names_the_config_file_in_its_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps([1]))
    with pytest.raises(JobInputError, match=f"config {path.as_uri()}: expected a JSON object, got list"):
        load_config(path.as_uri())


def test_model_meta_names_what_is_missing_or_wrong() -> None:
    meta = ModelMeta.parse({"family": "xgboost", "entity_key": "k", "classes": ["a", "b"], "booster": "model.json"})
    assert meta.entity_key_type == "string" and meta.raw["booster"] == "model.json"
    with pytest.raises(ConfigError, match=r"missing keys \['entity_key'\]"):
        ModelMeta.parse({"family": "xgboost", "classes": ["a", "b"]})
    with pytest.raises(ConfigError, match="family must be one of"):
        ModelMeta.parse({"family": "svm", "entity_key": "k", "classes": ["a", "b"]})


def test_the_contract_imports_nothing_but_the_standard_library() -> None:
    # mlbatch.spec imports it on every DAG parse, and the job images carry no pydantic.
    code = (
        "import sys, jobs.contract; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'numpy', 'pyarrow', 'pydantic', 'mlbatch', 'airflow', 'sklearn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
