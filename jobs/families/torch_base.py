"""What the PyTorch families share: the model's state dict and preprocessing files, the params
check, the fit's record in model_meta.json, loading onto the device, and the predict path.

A family subclasses :class:`TorchFamily` and gives its network (:meth:`~TorchFamily._build`), its
preprocessing as JSON and back (:meth:`~TorchFamily._preprocessing`,
:meth:`~TorchFamily._restore`) and its batches (:meth:`~TorchFamily._batches`); ``fit`` is its
own (its optimizers and inputs differ) and ends with :meth:`~TorchFamily._fitted`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from jobs.families import torch_common as tc
from jobs.families.tabular import TabularEncoder
from jobs.io import JobInputError, join_uri, read_json, write_json

MODEL_FILE = "model.pt"
PREPROCESSING_FILE = "preprocessing.json"

Net = TypeVar("Net", bound=nn.Module)


class TorchFamily(Generic[Net]):
    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, model: Net, encoder: TabularEncoder, meta: dict[str, Any], device: torch.device):
        self.model = model
        self.encoder = encoder
        self.meta = meta
        self.classes: list[str] = meta["classes"]
        self.precision = tc.Precision.choose(device, bool(meta["params"].get("amp", True)))

    # --- what each family gives ------------------------------------------------------------------

    @classmethod
    def _build(cls, meta: dict[str, Any], encoder: TabularEncoder) -> Net:
        """The untrained network for ``meta``'s params and classes."""
        raise NotImplementedError

    def _preprocessing(self) -> dict[str, Any]:
        """What ``preprocessing.json`` holds: enough to encode new rows as training did."""
        return self.encoder.to_json()

    @classmethod
    def _restore(cls, prep: dict[str, Any], meta: dict[str, Any]) -> tuple[TabularEncoder, dict[str, Any]]:
        """The encoder and the meta back from ``preprocessing.json`` (the inverse of :meth:`_preprocessing`)."""
        return TabularEncoder.from_json(prep), meta

    def _batches(self, data: pa.Table | pa.RecordBatch) -> tc.BatchFn:
        """The network's inputs for rows ``idx`` of ``data``."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------

    @classmethod
    def _params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The spec's ``train.params`` over the family's defaults; an unknown name is the spec's error."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise JobInputError(f"{cls.name}: unknown params {unknown}; known: {sorted(cls.defaults)}")
        return {**cls.defaults, **params}

    @classmethod
    def _fitted(
        cls,
        model: Net,
        encoder: TabularEncoder,
        meta: dict[str, Any],
        result: tc.FitResult,
        device: torch.device,
        precision: tc.Precision,
    ) -> Self:
        """The family after ``fit_loop``: what it was trained with and how it went, in ``meta``."""
        meta["params"].update(result.schedule)  # the derived batch size and budgets
        meta.update(
            {
                "best_iteration": result.best_epoch,
                "epochs_run": result.epochs_run,
                "best_valid_loss": result.best_valid_loss,
                "history": result.history,
                "device_trained": str(device),
                "precision_trained": precision.name,
            }
        )
        return cls(model, encoder, meta, device)

    def predict_proba(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        if data.num_rows == 0:
            return np.empty((0, len(self.classes)), dtype=np.float64)
        bs = int(self.meta["params"]["predict_batch_size"])
        return tc.predict_proba(self.model, self._batches(data), data.num_rows, bs, self.precision)

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        self.encoder.check_schema(schema, source)

    @property
    def effective_params(self) -> dict[str, Any]:
        return dict(self.meta["params"])

    @property
    def library_versions(self) -> dict[str, str]:
        return tc.library_versions()

    def save(self, prefix: str) -> dict[str, Any]:
        tc.save_state(self.model, join_uri(prefix, MODEL_FILE))
        write_json(join_uri(prefix, PREPROCESSING_FILE), self._preprocessing())
        return {
            **self.meta,
            "model_file": MODEL_FILE,
            "preprocessing_file": PREPROCESSING_FILE,
            **tc.library_versions(),
        }

    @classmethod
    def load(cls, prefix: str, meta: dict[str, Any]) -> Self:
        device = tc.detect_device()
        torch.set_num_threads(tc.scoring_threads())
        prep = read_json(join_uri(prefix, meta.get("preprocessing_file", PREPROCESSING_FILE)))
        encoder, meta = cls._restore(prep, meta)
        model = tc.load_state(cls._build(meta, encoder), prefix, meta.get("model_file", MODEL_FILE), device)
        return cls(model, encoder, meta, device)
