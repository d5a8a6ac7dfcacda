"""Model families: how one kind of model fits, predicts, saves and loads.

A family works on pyarrow tables/batches of feature columns (the entity key already removed)
and class indices into the config's ``classes``; the train and score jobs do the rest.
Families are imported lazily so that ``--help`` and an idempotent no-op retry stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from jobs.io import JobInputError

if TYPE_CHECKING:
    from jobs.checkpoint import Checkpointer

# family name (the spec's train.family) -> "module:class"
FAMILIES = {
    "xgboost": "jobs.families.xgboost_family:XGBoostFamily",
    "torch_mlp": "jobs.families.torch_mlp:TorchMLPFamily",
    "torch_text": "jobs.families.torch_text:TorchTextFamily",
}


class Family(Protocol):
    name: str

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
    ) -> Family:
        """Fit on the train rows, early-stopping on the valid rows; with ``checkpoint``, resume
        from this job's checkpoint where one exists and checkpoint as training goes."""
        ...

    def predict_proba(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Class probabilities, shape (rows, len(classes)), in the order of ``classes``."""
        ...

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        """Raise JobInputError naming ``source`` when a feature column cannot be encoded."""
        ...

    def save(self, prefix: str) -> dict[str, Any]:
        """Write the model files under ``prefix``; return the family's part of model_meta.json."""
        ...

    @classmethod
    def load(cls, prefix: str, meta: dict[str, Any]) -> Family: ...

    @property
    def effective_params(self) -> dict[str, Any]: ...

    @property
    def library_versions(self) -> dict[str, str]:
        """For lineage.json, e.g. {"xgboost_version": "3.1.0"}."""
        ...


def get_family(name: str) -> type[Family]:
    if name not in FAMILIES:
        raise JobInputError(f"unknown model family {name!r}: this image has {sorted(FAMILIES)}")
    module, attr = FAMILIES[name].split(":")
    family: type[Family] = getattr(importlib.import_module(module), attr)
    return family
