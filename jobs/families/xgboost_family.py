"""Gradient-boosted trees (xgboost, ``hist``), on a CUDA GPU when one is present.

Features become one float32 matrix: numeric columns as they are (null → NaN = missing), dates
and timestamps as days since 1970, string columns as integer codes into a category list fixed
at training and saved in model_meta.json. Scoring encodes with the same lists, so a code means
the same category on both sides; a category unseen in training, like a null, is missing.
We encode ourselves instead of handing xgboost pandas categoricals: it skips pandas
entirely and lets scoring use ``inplace_predict`` on a plain numpy matrix (the fastest path).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb
from xgboost.callback import EarlyStopping

from jobs.checkpoint import Checkpointer
from jobs.cpus import cores
from jobs.families.columns import as_strings, check_kinds, column_kind, encode_column
from jobs.io import JobInputError, join_uri, read_bytes, write_bytes

MODEL_FILE = "model.json"
DEFAULTS: dict[str, Any] = {
    # A ceiling, not a target: early stopping ends the fit. At learning rate 0.1 a 10-class table
    # of 1,257 rows still improved at round 500 (benchmarks/bench_families.py, digits); the
    # ceiling bounds a large table's cost to at most twice the former 500.
    "n_estimators": 1000,
    "max_depth": 6,
    "learning_rate": 0.1,
    # 50 rounds: with row and column sampling the validation loss is noisier round to round.
    "early_stopping_rounds": 50,
    # Each tree sees 80 % of the rows and of the columns: the usual regularisation of gradient
    # boosting (less variance from a few strong splits; on the benchmark's small tables +0.04
    # accuracy on wine, +0.007 on digits), and each round is cheaper on a large table, not dearer.
    "subsample": 0.8,
    "colsample_bytree": 0.8,
}
# Early stopping watches log loss, not the gate metric: AUC is rank-only and plateaus within a few
# rounds, stopping while probabilities are still shrunk toward the prior (measured: AUC stopped at
# round 6 with log loss 0.53 against 0.46). The published score is a probability, so it must be
# calibrated. params["eval_metric"] overrides.
_EVAL_METRIC = {"binary": "logloss", "multiclass": "mlogloss"}


@functools.cache
def detect_device() -> str:
    """Return "cuda" when this xgboost build sees a GPU, else "cpu". MLBATCH_XGB_DEVICE overrides.

    No nvidia-smi (not in every image): a one-round fit on 16 rows asks xgboost itself, which
    falls back to the CPU when no GPU is visible and says so in the booster's config (~30 ms).
    """
    forced = os.environ.get("MLBATCH_XGB_DEVICE", "").strip()
    if forced:
        return forced
    if not xgb.build_info().get("USE_CUDA") or os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return "cpu"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No visible GPU is found" is the answer, not a problem
            rng = np.random.default_rng(0)
            probe = xgb.DMatrix(rng.random((16, 2), dtype=np.float32), label=np.arange(16) % 2)
            booster = xgb.train(
                {"device": "cuda", "tree_method": "hist", "objective": "binary:logistic", "verbosity": 0},
                probe,
                num_boost_round=1,
            )
        device = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
        return "cuda" if str(device).startswith("cuda") else "cpu"
    except Exception:  # any CUDA failure means: train on the CPU
        return "cpu"


# Checkpoint every this many rounds (or every 60 s, whichever comes first; see jobs.checkpoint).
CHECKPOINT_EVERY = 50


class _Checkpoints(xgb.callback.TrainingCallback):
    """Saves the booster (UBJSON) and the early-stopping state after a round, when one is due.

    Listed after the EarlyStopping callback: xgboost stops calling callbacks at the first that
    says "stop", so the round that ends training writes no checkpoint, and the state saved is
    the one after this round's early-stopping update.
    """

    def __init__(self, checkpoint: Checkpointer, stopping: EarlyStopping | None, total: int):
        super().__init__()
        self.checkpoint, self.stopping, self.total = checkpoint, stopping, total
        self.start = 0

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        self.start = model.num_boosted_rounds()  # a resumed run counts on from the checkpoint
        return model

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        rounds = self.start + epoch + 1
        if rounds < self.total and self.checkpoint.due(rounds):
            state = stopping_state(self.stopping)
            self.checkpoint.save(rounds, self.total, state, bytes(model.save_raw(raw_format="ubj")))
        return False


def stopping_state(es: EarlyStopping | None) -> dict[str, Any]:
    if es is None:
        return {}
    return {
        "history": es.stopping_history,
        "best": es.best_scores,
        "waited": es.current_rounds,
        "maximize": es.maximize,
    }


def early_stopping(rounds: int, state: dict[str, Any]) -> EarlyStopping | None:
    """xgb.train's own callback for ``early_stopping_rounds``, with a checkpoint's state restored
    (its best score and rounds without improvement), so a resumed run stops where the
    uninterrupted one would."""
    if rounds <= 0:
        return None
    es = EarlyStopping(rounds=rounds)  # maximize: by the metric's name, as xgb.train decides
    if state:
        es.stopping_history, es.best_scores = state["history"], state["best"]
        es.current_rounds, es.maximize = int(state["waited"]), state["maximize"]
    return es


def boost(
    params: dict[str, Any],
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    n_estimators: int,
    stopping_rounds: int,
    checkpoint: Checkpointer | None,
) -> xgb.Booster:
    """``xgb.train`` with early stopping on ``dvalid``, checkpointed, resumed from this job's
    checkpoint where one exists: the booster of round k and the remaining n_estimators - k rounds.

    A resumed run equals the uninterrupted one exactly when no sampling is drawn (subsample and
    colsample_* at 1): xgboost's random engine starts afresh in a new process, so with sampling
    the remaining trees are fitted on other draws (as good a model, not the same bits).
    """
    resumed = checkpoint.resume("round") if checkpoint is not None else None
    start, state, model = 0, {}, None
    if resumed is not None:
        model = xgb.Booster()
        model.load_model(bytearray(resumed.payload))
        start, state = model.num_boosted_rounds(), resumed.state
    es = early_stopping(stopping_rounds, state)
    callbacks: list[xgb.callback.TrainingCallback] = [es] if es is not None else []
    if checkpoint is not None:
        checkpoint.begin(start, CHECKPOINT_EVERY)
        callbacks.append(_Checkpoints(checkpoint, es, n_estimators))
    return xgb.train(
        params,
        dtrain,
        num_boost_round=n_estimators - start,  # continued training counts the rounds it adds
        evals=[(dvalid, "valid")],
        callbacks=callbacks,
        xgb_model=model,
        verbose_eval=False,
    )


class FeatureEncoder:
    """Feature columns -> float32 matrix; the same object encodes for fit and for predict."""

    def __init__(self, features: list[str], kinds: dict[str, str], categorical: dict[str, list[str]]):
        self.features = features
        self.kinds = kinds
        self.categories = {c: pa.array(v, pa.string()) for c, v in categorical.items()}

    def encode(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """The model's feature matrix for these rows (float32, C order, columns in model order)."""
        x = np.empty((data.num_rows, len(self.features)), dtype=np.float32)
        for j, name in enumerate(self.features):
            x[:, j] = encode_column(name, data.column(name), self.kinds[name], self.categories.get(name))
        return x

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        check_kinds(schema, self.features, self.kinds, source, "xgboost")


class XGBoostFamily:
    name = "xgboost"

    def __init__(self, booster: xgb.Booster, meta: dict[str, Any]):
        self.booster = booster
        self.meta = meta
        self.classes: list[str] = meta["classes"]
        self.encoder = FeatureEncoder(meta["features"], meta["kinds"], meta["categorical"])
        # Prediction runs on the CPU with numpy input; a cuda booster would copy each batch.
        self.booster.set_param({"device": "cpu", "nthread": cores()})

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        self.encoder.check_schema(schema, source)

    # --- fit / predict ----------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        train: pa.Table,
        y_train: np.ndarray,
        valid: pa.Table,
        y_valid: np.ndarray,
        *,
        classes: list[str],
        params: dict[str, Any],
        seed: int,
        metric: str,
        checkpoint: Checkpointer | None = None,
    ) -> XGBoostFamily:
        del metric  # the gate's business; early stopping watches log loss (see _EVAL_METRIC)
        kinds = {f.name: column_kind(f, "xgboost") for f in train.schema}
        categorical = {}
        for name, kind in kinds.items():
            if kind == "categorical":
                # Train split only: a category never trained on is "missing" here, as at scoring.
                values = pc.unique(as_strings(train.column(name))).drop_null()
                categorical[name] = sorted(values.to_pylist())
        task = "binary" if len(classes) == 2 else "multiclass"
        merged = {**DEFAULTS, **params}
        n_estimators = int(merged.pop("n_estimators"))
        early_stopping = int(merged.pop("early_stopping_rounds"))
        device = str(merged.pop("device", None) or detect_device())
        xgb_params: dict[str, Any] = {
            "tree_method": "hist",
            "eval_metric": _EVAL_METRIC[task],
            **merged,
            # Fixed by the task and the job, whatever params say:
            "objective": "binary:logistic" if task == "binary" else "multi:softprob",
            "device": device,
            "seed": seed,
            "nthread": cores(),
        }
        if task == "multiclass":
            xgb_params["num_class"] = len(classes)

        meta: dict[str, Any] = {  # model_meta.json's family part (JSON)
            "features": list(train.column_names),
            "kinds": kinds,
            "categorical": categorical,
            "classes": list(classes),
        }
        encoder = FeatureEncoder(meta["features"], kinds, categorical)
        feature_types = ["c" if kinds[f] == "categorical" else "q" for f in meta["features"]]
        names = meta["features"] if all(not set("[]<,") & set(f) for f in meta["features"]) else None
        dtrain = xgb.QuantileDMatrix(
            encoder.encode(train),
            y_train,
            feature_names=names,
            feature_types=feature_types,
            enable_categorical=True,
            nthread=cores(),
        )
        dvalid = xgb.QuantileDMatrix(
            encoder.encode(valid),
            y_valid,
            feature_names=names,
            feature_types=feature_types,
            enable_categorical=True,
            ref=dtrain,
            nthread=cores(),
        )
        print(
            f"train: fitting xgboost on {device}: {train.num_rows} rows x {len(meta['features'])} "
            f"features, up to {n_estimators} rounds",
            file=sys.stderr,
        )
        booster = boost(xgb_params, dtrain, dvalid, n_estimators, early_stopping, checkpoint)
        best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
        # Keep only the trees up to the best round: every later predict, anywhere, uses exactly them.
        booster = booster[: best + 1]
        meta.update(
            {
                "best_iteration": best,
                "num_boosted_rounds": booster.num_boosted_rounds(),
                "device_trained": device,
                "params": {
                    **xgb_params,
                    "n_estimators": n_estimators,
                    "early_stopping_rounds": early_stopping,
                },
                "feature_importance_gain": booster.get_score(importance_type="gain") if names else {},
            }
        )
        return cls(booster, meta)

    def predict_proba(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        if data.num_rows == 0:
            return np.empty((0, len(self.classes)), dtype=np.float64)
        p = np.asarray(self.booster.inplace_predict(self.encoder.encode(data)), dtype=np.float64)
        if p.ndim == 1:  # binary:logistic gives P(classes[1])
            p = np.column_stack([1.0 - p, p])
        return p

    def feature_importance(self) -> dict[str, Any]:
        """xgboost's gain per feature (see :mod:`jobs.importance`), by the features' own names."""
        # Only when importances are asked for: jobs.importance imports the family's booster API.
        from jobs.importance import gain_importance

        features = self.meta["features"]
        scores = {}
        for kind in ("gain", "total_gain"):
            raw = self.booster.get_score(importance_type=kind)
            # A booster without feature names (one had "[", "]", "<" or ",") says f0, f1, ...
            # A gain is one float per feature (a list only for vector-leaf trees, which fit never builds).
            gains = cast(dict[str, float], raw)
            scores[kind] = {features[int(k[1:])] if k not in features else k: float(v) for k, v in gains.items()}
        return gain_importance(scores["gain"], scores["total_gain"], features)

    @property
    def effective_params(self) -> dict[str, Any]:
        return dict(self.meta["params"])

    @property
    def library_versions(self) -> dict[str, str]:
        return {"xgboost_version": xgb.__version__}

    # --- persistence ------------------------------------------------------------------------

    def save(self, prefix: str) -> dict[str, Any]:
        write_bytes(join_uri(prefix, MODEL_FILE), bytes(self.booster.save_raw(raw_format="json")))
        return {**self.meta, "model_file": MODEL_FILE, "xgboost_version": xgb.__version__}

    @classmethod
    def load(cls, prefix: str, meta: dict[str, Any]) -> XGBoostFamily:
        uri = join_uri(prefix, meta.get("model_file", MODEL_FILE))
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(read_bytes(uri)))
        except xgb.core.XGBoostError as exc:
            raise JobInputError(f"{uri}: not an xgboost model this xgboost {xgb.__version__} can load: {exc}") from exc
        return cls(booster, meta)
