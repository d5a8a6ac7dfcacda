"""A tabular multilayer perceptron (PyTorch), for binary and multiclass models.

Inputs: standardised numeric columns with missing indicators and one learned embedding per
string column (see :mod:`jobs.families.tabular`). Hidden layers Linear -> ReLU -> Dropout,
softmax over the classes (two logits for a binary model, so both tasks share one loss and one
predict path). Saved as ``model.pt`` (a state_dict) and ``preprocessing.json`` (means, standard
deviations, category lists): the architecture is rebuilt from model_meta.json, never unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from jobs.checkpoint import Checkpointer
from jobs.families import torch_common as tc
from jobs.families.tabular import TabularEncoder
from jobs.families.torch_base import TorchFamily

DEFAULTS: dict[str, Any] = {
    **tc.TRAIN_DEFAULTS,
    "hidden": [128, 64],
    "dropout": 0.1,
    "max_embedding_dim": 16,
    "max_categories": 1000,
    "predict_batch_size": 16_384,
}


def embedding_dim(cardinality: int, cap: int) -> int:
    # The usual rule of thumb: about half the categories, at most ``cap``.
    return max(2, min(cap, (cardinality + 1) // 2))


class MLP(nn.Module):
    def __init__(
        self, n_numeric: int, cardinalities: list[int], hidden: list[int], dropout: float, n_out: int, cap: int
    ):
        super().__init__()
        embeddings = [nn.Embedding(c, embedding_dim(c, cap)) for c in cardinalities]
        self.embeddings = nn.ModuleList(embeddings)
        width = n_numeric + sum(e.embedding_dim for e in embeddings)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]
        logits: torch.Tensor = self.net(torch.cat(parts, dim=1) if len(parts) > 1 else x_num)
        return logits


def _batch_fn(x_num: np.ndarray, x_cat: np.ndarray) -> tc.BatchFn:
    num, cat = torch.from_numpy(x_num), torch.from_numpy(x_cat)
    return lambda idx: (num[idx], cat[idx])


class TorchMLPFamily(TorchFamily[MLP]):
    name = "torch_mlp"
    defaults = DEFAULTS

    @classmethod
    def _build(cls, meta: dict[str, Any], encoder: TabularEncoder) -> MLP:
        p = meta["params"]
        return MLP(
            encoder.n_numeric,
            encoder.cardinalities,
            [int(h) for h in p["hidden"]],
            float(p["dropout"]),
            len(meta["classes"]),
            int(p["max_embedding_dim"]),
        )

    def _batches(self, data: pa.Table | pa.RecordBatch) -> tc.BatchFn:
        return _batch_fn(self.encoder.numeric_matrix(data), self.encoder.category_codes(data))

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
    ) -> TorchMLPFamily:
        del metric  # early stopping watches the validation loss; the gate judges the metric
        p = cls._params(params)
        device = tc.detect_device()
        tc.seed_everything(seed, device, int(p["threads"]))
        encoder = TabularEncoder.fit(train, family=cls.name, max_categories=int(p["max_categories"]))
        meta: dict[str, Any] = {"features": list(train.column_names), "classes": list(classes), "params": p}
        model = cls._build(meta, encoder).to(device)  # before the optimizers take its parameters
        # No weight decay on biases and embeddings: it only shrinks them toward zero.
        decay = [w for n, w in model.named_parameters() if n.endswith("weight") and "embeddings" not in n]
        rest = [w for n, w in model.named_parameters() if not (n.endswith("weight") and "embeddings" not in n)]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(p["weight_decay"])}, {"params": rest, "weight_decay": 0.0}],
            lr=float(p["lr"]),
        )
        precision = tc.Precision.choose(device, bool(p["amp"]))
        tc.log(
            f"fitting torch_mlp on {device} ({precision.name}): {train.num_rows} rows, {encoder.n_numeric} numeric "
            f"inputs, {len(encoder.categorical)} embeddings, hidden {p['hidden']}"
        )
        result = tc.fit_loop(
            model,
            train_fn=_batch_fn(encoder.numeric_matrix(train), encoder.category_codes(train)),
            y_train=y_train,
            valid_fn=_batch_fn(encoder.numeric_matrix(valid), encoder.category_codes(valid)),
            y_valid=y_valid,
            optimizers=[opt],
            params=p,
            seed=seed,
            precision=precision,
            checkpoint=checkpoint,
        )
        return cls._fitted(model, encoder, meta, result, device, precision)
