"""A text classifier (PyTorch): an EmbeddingBag over hashed word unigrams and bigrams.

The fastText recipe: every string column is NFKC-normalised, lower-cased and split into words
(runs of Unicode letters and digits); each word and each pair of adjacent words is hashed into
one of ``buckets`` rows (CRC-32, stable across processes and machines, unlike Python's salted
``hash()``; no vocabulary to build, save or version). The bag's mean embedding is concatenated
with the standardised numeric columns (see :mod:`jobs.families.tabular`) and goes through one
hidden layer to a softmax over the classes. Tokenising is vectorised with pyarrow compute, and
only the distinct tokens of a batch are hashed in Python.

The embedding is sparse (only the rows of a batch's tokens get gradients) and trained with
SparseAdam; the dense head with AdamW. Saved as ``model.pt`` (state_dict) and
``preprocessing.json`` (text columns, buckets, bigrams, numeric means and deviations).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from jobs.checkpoint import Checkpointer
from jobs.families import torch_common as tc
from jobs.families.columns import as_strings
from jobs.families.tabular import TabularEncoder
from jobs.families.torch_base import TorchFamily
from jobs.io import JobInputError

DEFAULTS: dict[str, Any] = {
    # batch size, epoch budget and patience: derived from the table, as for torch_mlp (fixed 256 /
    # 20 / 2 ended every run of the benchmark's 1,977-row corpus at epoch 20, still improving)
    **tc.TRAIN_DEFAULTS,
    "lr": 3e-3,
    "embedding_lr": 1e-2,
    "buckets": 2**18,
    "dim": 16,
    "hidden": 32,
    "dropout": 0.1,
    "bigrams": True,
    "sparse": True,
    "predict_batch_size": 16_384,
}
_WORD_SPLIT = r"[^\p{L}\p{N}]+"  # RE2: anything that is not a Unicode letter or digit
_HASH_CACHE: dict[str, int] = {}
_HASH_CACHE_MAX = 2_000_000


def _bucket_of(tokens: list[str], buckets: int) -> np.ndarray:
    out = np.empty(len(tokens), dtype=np.int64)
    cache = _HASH_CACHE if len(_HASH_CACHE) < _HASH_CACHE_MAX else {}
    for i, tok in enumerate(tokens):
        h = cache.get(tok)
        if h is None:
            h = cache[tok] = zlib.crc32(tok.encode("utf-8"))
        out[i] = h
    return out % buckets


def words(col: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """The column's words, flattened, and the row each came from."""
    text = as_strings(col)
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(text, ""), form="NFKC"))
    lists = pc.split_pattern_regex(text, pattern=_WORD_SPLIT)
    flat = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    keep = pc.greater(pc.utf8_length(flat), 0)
    return flat.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]


def hashed_tokens(
    data: pa.Table | pa.RecordBatch, columns: list[str], buckets: int, bigrams: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, row offsets) of every row, ready for ``nn.EmbeddingBag``: row i's tokens are
    ``ids[offsets[i]:offsets[i + 1]]`` (an empty row gets an empty bag, i.e. a zero vector)."""
    ids, rows = [], []
    for name in columns:
        flat, row_of = words(data.column(name))
        prefix = f"{name}\x1f" if len(columns) > 1 else ""  # same word, different column: another token
        pieces = [(flat, row_of)]
        if bigrams and len(flat) > 1:
            same = row_of[1:] == row_of[:-1]
            pairs = pc.binary_join_element_wise(flat.slice(0, len(flat) - 1), flat.slice(1), " ")
            pieces.append((pairs.filter(pa.array(same)), row_of[:-1][same]))
        for tokens, row in pieces:
            if len(tokens) == 0:
                continue
            enc = tokens.dictionary_encode()
            vocab = [prefix + t for t in enc.dictionary.to_pylist()]
            ids.append(_bucket_of(vocab, buckets)[enc.indices.to_numpy(zero_copy_only=False)])
            rows.append(row)
    if not ids:
        return np.empty(0, np.int64), np.zeros(data.num_rows, np.int64)
    row = np.concatenate(rows)
    order = np.argsort(row, kind="stable")
    counts = np.bincount(row, minlength=data.num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.concatenate(ids)[order], offsets


class TextClassifier(nn.Module):
    def __init__(self, buckets: int, dim: int, n_numeric: int, hidden: int, dropout: float, n_out: int, sparse: bool):
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean", sparse=sparse)
        nn.init.normal_(self.bag.weight, std=0.1)
        width = dim + n_numeric
        if hidden:
            self.head = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_out))

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        h = self.bag(tokens, offsets)
        if x_num.shape[1]:
            h = torch.cat([h, x_num.to(h.dtype)], dim=1)
        logits: torch.Tensor = self.head(h)
        return logits


class _Encoded:
    """One split, encoded once: token ids (CSR) and the numeric matrix; batches gather rows."""

    def __init__(self, data: pa.Table | pa.RecordBatch, encoder: TabularEncoder, prep: dict[str, Any]):
        ids, offsets = hashed_tokens(data, prep["text_columns"], int(prep["buckets"]), bool(prep["bigrams"]))
        self.ids, self.starts = ids, offsets
        self.lengths = np.diff(np.append(offsets, len(ids)))
        self.x_num = encoder.numeric_matrix(data)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = self.lengths[idx]
        ends = np.cumsum(lengths)
        begins = ends - lengths
        total = int(ends[-1]) if len(ends) else 0
        pos = np.arange(total) - np.repeat(begins, lengths) + np.repeat(self.starts[idx], lengths)
        return torch.from_numpy(self.ids[pos]), torch.from_numpy(begins), torch.from_numpy(self.x_num[idx])


class TorchTextFamily(TorchFamily[TextClassifier]):
    name = "torch_text"
    defaults = DEFAULTS

    def __init__(self, model: TextClassifier, encoder: TabularEncoder, meta: dict[str, Any], device: torch.device):
        super().__init__(model, encoder, meta, device)
        self.prep: dict[str, Any] = meta["text"]

    @classmethod
    def _build(cls, meta: dict[str, Any], encoder: TabularEncoder) -> TextClassifier:
        p = meta["params"]
        return TextClassifier(
            int(p["buckets"]),
            int(p["dim"]),
            encoder.n_numeric,
            int(p["hidden"]),
            float(p["dropout"]),
            len(meta["classes"]),
            bool(p["sparse"]),
        )

    def _preprocessing(self) -> dict[str, Any]:
        return {"numeric": self.encoder.to_json(), "text": self.prep}

    @classmethod
    def _restore(cls, prep: dict[str, Any], meta: dict[str, Any]) -> tuple[TabularEncoder, dict[str, Any]]:
        return TabularEncoder.from_json(prep["numeric"]), {**meta, "text": prep["text"]}

    def _batches(self, data: pa.Table | pa.RecordBatch) -> tc.BatchFn:
        return _Encoded(data, self.encoder, self.prep).batch

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
    ) -> TorchTextFamily:
        del metric  # early stopping watches the validation loss; the gate judges the metric
        p = cls._params(params)
        if not 2 <= int(p["buckets"]) <= 2**24:
            raise JobInputError(f"torch_text: buckets must be between 2 and 2**24, got {p['buckets']}")
        device = tc.detect_device()
        tc.seed_everything(seed, device, int(p["threads"]))
        encoder = TabularEncoder.fit(train, family=cls.name, strings="ignore")
        if not encoder.ignored:
            raise JobInputError(
                f"torch_text: no text (string) column among the features {train.column_names}; "
                "select the text in the feature SQL, or use torch_mlp for numbers only"
            )
        text = {"text_columns": encoder.ignored, "buckets": int(p["buckets"]), "bigrams": bool(p["bigrams"])}
        meta: dict[str, Any] = {
            "features": list(train.column_names),
            "classes": list(classes),
            "params": p,
            "text": text,
        }
        model = cls._build(meta, encoder).to(device)  # before the optimizers take its parameters
        bag = [model.bag.weight]
        decay = [w for n, w in model.head.named_parameters() if n.endswith("weight")]
        no_decay = [w for n, w in model.head.named_parameters() if not n.endswith("weight")]
        dense_groups = [
            {"params": decay, "weight_decay": float(p["weight_decay"])},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if p["sparse"]:
            optimizers: list[torch.optim.Optimizer] = [
                torch.optim.SparseAdam(bag, lr=float(p["embedding_lr"])),
                torch.optim.AdamW(dense_groups, lr=float(p["lr"])),
            ]
        else:
            dense_groups.append({"params": bag, "weight_decay": 0.0, "lr": float(p["embedding_lr"])})
            optimizers = [torch.optim.AdamW(dense_groups, lr=float(p["lr"]))]
        precision = tc.Precision.choose(device, bool(p["amp"]))
        tr, va = _Encoded(train, encoder, text), _Encoded(valid, encoder, text)
        tc.log(
            f"fitting torch_text on {device} ({precision.name}): {train.num_rows} rows, text {text['text_columns']} "
            f"({len(tr.ids)} tokens into {text['buckets']} buckets), {encoder.n_numeric} numeric inputs"
        )
        result = tc.fit_loop(
            model,
            train_fn=tr.batch,
            y_train=y_train,
            valid_fn=va.batch,
            y_valid=y_valid,
            optimizers=optimizers,
            params=p,
            seed=seed,
            precision=precision,
            checkpoint=checkpoint,
        )
        return cls._fitted(model, encoder, meta, result, device, precision)
