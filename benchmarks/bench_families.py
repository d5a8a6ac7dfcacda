"""Each model family with its DEFAULT parameters against scikit-learn, on held-out splits.

    python benchmarks/bench_families.py [--seeds 0,1,2,3,4] [--only xgboost,torch_mlp,torch_text] [--json PATH]

Datasets: the ones that ship with scikit-learn (no download): ``load_breast_cancer`` (binary,
569 rows x 30), ``load_wine`` (3 classes, 178 x 13) and ``load_digits`` (10 classes, 1,797 x 64);
for torch_text a corpus built locally from scikit-learn's own docstrings: every paragraph of at
least 8 words in the docstrings of the public classes and functions of five sub-packages
(linear_model, ensemble, cluster, metrics, preprocessing), labelled with its sub-package. Real
English text about five topics; no download, and the same corpus for a given scikit-learn version.

For each dataset, family and seed: the features are written as a Redshift UNLOAD manifest (one
parquet part, an int64 ``id`` key) and the labels as a parquet of (entity_key, label), exactly as
the train stage hands them over, and the family is trained through its job entrypoint
(``python -m jobs.train --config --features --labels --output``) with ``params: {}``. The job splits
train/valid/test itself (stratified, seeded: ``jobs.train.split_indices``, 70/15/15); the
benchmark computes the same split with the same function and checks it is the job's (test size,
and the job's metric recomputed from the job's saved model on our test rows). The scikit-learn
references are fitted on train + valid (the rows the family sees, early stopping included) and
scored on the same test rows:

- xgboost vs ``HistGradientBoostingClassifier()``; target: family >= reference - 0.005;
- torch_mlp vs the better of ``LogisticRegression(max_iter=5000)`` and
  ``MLPClassifier(max_iter=2000)``, both on ``StandardScaler`` inputs; target: family >= reference - 0.005;
- torch_text vs ``TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))`` +
  ``LogisticRegression(max_iter=5000)``; target: family >= reference - 0.005.

Metric: ROC AUC for binary, accuracy for multiclass (what metrics.json holds), averaged over the
seeds (each seed a different split). Prints a markdown table and writes the report as JSON to
``benchmarks/results/families-<date>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

TOLERANCE = 0.005
TEXT_PACKAGES = ("linear_model", "ensemble", "cluster", "metrics", "preprocessing")


# --- datasets ---------------------------------------------------------------------------------


def tabular(name: str) -> dict[str, Any]:
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine, "digits": datasets.load_digits}
    d = loader[name]()
    classes = [str(c) for c in d.target_names]
    x = np.asarray(d.data, dtype=np.float64)
    cols = {f"f{j:02d}": pa.array(x[:, j]) for j in range(x.shape[1])}
    return {"name": name, "table": pa.table(cols), "x": x, "y": np.asarray(d.target), "classes": classes}


def docstring_corpus() -> dict[str, Any]:
    """Paragraphs of scikit-learn's docstrings, labelled with the sub-package they document."""
    import importlib

    texts, labels, seen = [], [], set()
    for k, pkg in enumerate(TEXT_PACKAGES):
        mod = importlib.import_module(f"sklearn.{pkg}")
        for attr in sorted(getattr(mod, "__all__", dir(mod))):
            obj = getattr(mod, attr, None)
            if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            for para in re.split(r"\n\s*\n", doc):
                para = " ".join(para.split())
                # prose only: skip section rulers, short lines and code examples
                if len(para.split()) < 8 or para.startswith(">>>") or set(para) <= set("-= "):
                    continue
                if para in seen:  # a paragraph shared by two classes would leak across the split
                    continue
                seen.add(para)
                texts.append(para)
                labels.append(k)
    return {
        "name": "sklearn_docstrings",
        "table": pa.table({"text": pa.array(texts, pa.string())}),
        "texts": np.array(texts, dtype=object),
        "y": np.array(labels),
        "classes": list(TEXT_PACKAGES),
    }


# --- the job's inputs, as the train stage writes them -----------------------------------------

_BASE = {"int64": "bigint", "double": "double precision", "string": "character varying"}


def write_inputs(work: Path, ds: dict[str, Any], family: str, seed: int, metric: str) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    n = ds["table"].num_rows
    features = ds["table"].add_column(0, "id", pa.array(np.arange(n, dtype=np.int64)))
    part = work / "features" / "0000_part_00.parquet"
    part.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(features, part)
    size = part.stat().st_size
    manifest = {
        "entries": [{"url": part.as_uri(), "meta": {"content_length": size, "record_count": n}}],
        "schema": {"elements": [{"name": f.name, "type": {"base": _BASE[str(f.type)]}} for f in features.schema]},
        "meta": {"content_length": size, "record_count": n},
        "author": {"name": "Amazon Redshift", "version": "1.0.0"},
    }
    (work / "features" / "manifest").write_text(json.dumps(manifest))
    labels = pa.table(
        {
            "entity_key": pa.array(np.arange(n, dtype=np.int64)),
            "label": pa.array([ds["classes"][i] for i in ds["y"]], pa.string()),
        }
    )
    pq.write_table(labels, work / "labels.parquet")
    config = {
        "model": f"bench_{ds['name']}",
        "version": f"{family}-s{seed}",
        "entity_key": "id",
        "classes": ds["classes"],
        "family": family,
        "params": {},
        "metric": metric,
        "seed": seed,
    }
    (work / "config.json").write_text(json.dumps(config))
    return {
        "config": (work / "config.json").as_uri(),
        "features": (work / "features" / "manifest").as_uri(),
        "labels": (work / "labels.parquet").as_uri(),
        "output": (work / "model").as_uri() + "/",
    }


def run_job(uris: dict[str, str], log: Path) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("MLBATCH_XGB_DEVICE", "cpu")
    env.setdefault("MLBATCH_TORCH_DEVICE", "cpu")
    cmd = [sys.executable, "-m", "jobs.train"]
    for k in ("config", "features", "labels", "output"):
        cmd += [f"--{k}", uris[k]]
    started = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.monotonic() - started
    if rc != 0:
        raise RuntimeError(f"jobs.train exited {rc}; log {log}:\n{log.read_text()[-3000:]}")
    out = Path(uris["output"].removeprefix("file://"))
    return json.loads((out / "metrics.json").read_text()), seconds


def job_model_score(uris: dict[str, str], ds: dict[str, Any], test_idx: np.ndarray, metric: str) -> float:
    """The job's saved model, loaded as the score job would, on OUR test rows."""
    from jobs.families import get_family

    out = uris["output"]
    meta = json.loads(Path(out.removeprefix("file://"), "model_meta.json").read_text())
    model = get_family(meta["family"]).load(out, meta)
    return score(metric, ds["y"][test_idx], model.predict_proba(ds["table"].take(test_idx)))


# --- references ---------------------------------------------------------------------------------


def score(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, roc_auc_score

    if metric == "roc_auc":
        return float(roc_auc_score(y, proba[:, 1]))
    return float(accuracy_score(y, proba.argmax(axis=1)))


def references(family: str, ds: dict[str, Any], fit_idx: np.ndarray, test_idx: np.ndarray, metric: str, seed: int):
    """{reference name: test metric}; the verdict compares with the best of them."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = ds["y"]
    if family == "torch_text":
        models = {
            "tfidf+logreg": make_pipeline(
                TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)), LogisticRegression(max_iter=5000)
            )
        }
        x = ds["texts"]
    elif family == "xgboost":
        models = {"hist_gbdt": HistGradientBoostingClassifier(random_state=seed)}
        x = ds["x"]
    else:
        models = {
            "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
            "mlp": make_pipeline(StandardScaler(), MLPClassifier(max_iter=2000, random_state=seed)),
        }
        x = ds["x"]
    out = {}
    for name, m in models.items():
        m.fit(x[fit_idx], y[fit_idx])
        out[name] = score(metric, y[test_idx], m.predict_proba(x[test_idx]))
    return out


# --- the run ------------------------------------------------------------------------------------

CASES = [
    ("breast_cancer", "xgboost"),
    ("wine", "xgboost"),
    ("digits", "xgboost"),
    ("breast_cancer", "torch_mlp"),
    ("wine", "torch_mlp"),
    ("digits", "torch_mlp"),
    ("sklearn_docstrings", "torch_text"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds; each is a different split")
    p.add_argument("--only", default="", help="comma-separated families (default: all)")
    p.add_argument("--json", default="", help="report path (default benchmarks/results/families-<date>.json)")
    p.add_argument("--workdir", default="", help="keep the job inputs and outputs here (default: a temp dir)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    only = {f for f in args.only.split(",") if f}

    from jobs.train import split_indices

    datasets: dict[str, dict[str, Any]] = {}
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_families_") as tmp:
        root = Path(args.workdir or tmp)
        for ds_name, family in CASES:
            if only and family not in only:
                continue
            if ds_name not in datasets:
                datasets[ds_name] = docstring_corpus() if ds_name == "sklearn_docstrings" else tabular(ds_name)
            ds = datasets[ds_name]
            metric = "roc_auc" if len(ds["classes"]) == 2 else "accuracy"
            per_seed = []
            for seed in seeds:
                train_idx, valid_idx, test_idx = split_indices(ds["y"], 0.15, 0.15, seed)
                work = root / ds_name / family / f"seed{seed}"
                uris = write_inputs(work, ds, family, seed, metric)
                metrics, seconds = run_job(uris, work / "train.log")
                if metrics["n_test"] != len(test_idx):
                    raise RuntimeError(f"{ds_name}/{family}: job tested {metrics['n_test']} rows, we {len(test_idx)}")
                value = float(metrics[metric])
                check = job_model_score(uris, ds, test_idx, metric)
                if abs(check - value) > 1e-6:
                    raise RuntimeError(
                        f"{ds_name}/{family} seed {seed}: the job's test split is not ours "
                        f"({metric} {value} in metrics.json, {check} on our test rows)"
                    )
                fit_idx = np.sort(np.concatenate([train_idx, valid_idx]))
                refs = references(family, ds, fit_idx, test_idx, metric, seed)
                per_seed.append(
                    {
                        "seed": seed,
                        "family": value,
                        "references": refs,
                        "reference": max(refs.values()),
                        "best_iteration": metrics.get("best_iteration"),
                        "job_seconds": round(seconds, 2),
                    }
                )
                print(
                    f"{ds_name:20s} {family:10s} seed {seed}: {metric} {value:.4f} vs {refs} ({seconds:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            fam = float(np.mean([r["family"] for r in per_seed]))
            names = list(per_seed[0]["references"])
            ref_means = {n: float(np.mean([r["references"][n] for r in per_seed])) for n in names}
            best = max(ref_means, key=ref_means.get)
            ref = ref_means[best]
            rows.append(
                {
                    "dataset": ds_name,
                    "rows": ds["table"].num_rows,
                    "classes": len(ds["classes"]),
                    "family": family,
                    "metric": metric,
                    "family_value": fam,
                    "reference": best,
                    "reference_value": ref,
                    "references": ref_means,
                    "delta": fam - ref,
                    "verdict": "ok" if fam >= ref - TOLERANCE else "SHORT",
                    "seeds": per_seed,
                }
            )
    total = time.monotonic() - started

    lines = [
        "| dataset | rows | family | metric | family value | reference | reference value | delta | verdict |",
        "|---|---:|---|---|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['rows']:,} | {r['family']} | {r['metric']} | {r['family_value']:.4f} | "
            f"{r['reference']} | {r['reference_value']:.4f} | {r['delta']:+.4f} | {r['verdict']} |"
        )
    table = "\n".join(lines)
    print(table)
    print(f"\n{len(seeds)} seed(s) {seeds}, mean over seeds; tolerance {TOLERANCE}; {total:.0f} s in all")

    import sklearn
    import xgboost

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    report = {
        "benchmark": "bench_families",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seeds": seeds,
        "tolerance": TOLERANCE,
        "seconds": round(total, 1),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "versions": {"sklearn": sklearn.__version__, "xgboost": xgboost.__version__, "torch": torch_version},
        "rows": rows,
        "table": table,
    }
    path = (
        Path(args.json)
        if args.json
        else REPO / "benchmarks" / "results" / f"families-{datetime.now(UTC):%Y-%m-%d}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
