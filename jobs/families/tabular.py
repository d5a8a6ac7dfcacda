"""Tabular preprocessing for the neural families, fitted on the training split and saved as JSON.

Numeric and temporal columns are standardised with the training mean and standard deviation; a
missing value becomes the mean (0 after standardising) and, for each column that had nulls in
training, a 0/1 missing-indicator column is appended, so the network can tell "average" from
"unknown". Values are clipped to +-CLIP standard deviations: one absurd value at scoring time
must not blow up a prediction. String columns become integer codes for an embedding: 0 is
missing or unseen, i + 1 is the i-th category of the saved list (the most frequent
``max_categories`` of the training split, so a high-cardinality column stays bounded).
No torch here: the JSON is readable, and the encoder is testable, without the framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.families.columns import as_strings, check_kinds, column_kind, encode_column

CLIP = 8.0


@dataclass
class TabularEncoder:
    family: str
    columns: list[str]  # every feature column, in the model's order (JSON objects lose order)
    kinds: dict[str, str]
    numeric: list[str]  # numeric and temporal columns, standardised
    mean: list[float]
    std: list[float]
    indicators: list[str]  # numeric columns that get a missing indicator
    categorical: dict[str, list[str]] = field(default_factory=dict)  # used by the embeddings
    ignored: list[str] = field(default_factory=list)  # string columns another encoder handles

    @classmethod
    def fit(
        cls, train: pa.Table, *, family: str, max_categories: int = 1000, strings: str = "categorical"
    ) -> TabularEncoder:
        """``strings``: "categorical" (embedding codes) or "ignore" (the text family tokenises them)."""
        kinds = {f.name: column_kind(f, family) for f in train.schema}
        numeric = [c for c, k in kinds.items() if k != "categorical"]
        raw = _raw_numeric(train, numeric, kinds)
        with np.errstate(all="ignore"):
            mean = np.nan_to_num(np.nanmean(raw, axis=0), nan=0.0) if raw.size else np.zeros(len(numeric))
            std = np.nan_to_num(np.nanstd(raw, axis=0), nan=1.0) if raw.size else np.ones(len(numeric))
        std = np.where(std > 1e-12, std, 1.0)
        indicators = [c for j, c in enumerate(numeric) if np.isnan(raw[:, j]).any()]
        categorical: dict[str, list[str]] = {}
        ignored: list[str] = []
        for name, kind in kinds.items():
            if kind != "categorical":
                continue
            if strings == "ignore":
                ignored.append(name)
                continue
            counts = pc.value_counts(as_strings(train.column(name)).drop_null()).to_pylist()
            counts.sort(key=lambda c: (-c["counts"], c["values"]))
            categorical[name] = sorted(c["values"] for c in counts[:max_categories])
        return cls(
            family=family,
            columns=list(train.column_names),
            kinds=kinds,
            numeric=numeric,
            mean=[float(v) for v in mean],
            std=[float(v) for v in std],
            indicators=indicators,
            categorical=categorical,
            ignored=ignored,
        )

    @property
    def n_numeric(self) -> int:
        return len(self.numeric) + len(self.indicators)

    @property
    def categorical_columns(self) -> list[str]:
        """String columns with an embedding, in feature order (never the JSON's key order)."""
        return [c for c in self.columns if c in self.categorical]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding sizes: each category list plus the shared missing/unseen code 0."""
        return [len(self.categorical[c]) + 1 for c in self.categorical_columns]

    def numeric_matrix(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """(rows, n_numeric) float32: standardised values, then the missing indicators."""
        raw = _raw_numeric(data, self.numeric, self.kinds)
        missing = np.isnan(raw)
        x = (raw - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        np.clip(x, -CLIP, CLIP, out=x)
        x[missing] = 0.0
        if self.indicators:
            cols = [self.numeric.index(c) for c in self.indicators]
            x = np.concatenate([x, missing[:, cols].astype(np.float32)], axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def category_codes(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """(rows, len(categorical)) int64 codes; 0 = missing or unseen."""
        out = np.zeros((data.num_rows, len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.categorical_columns):
            values = pa.array(self.categorical[name], pa.string())
            codes = pc.index_in(as_strings(data.column(name)), value_set=values)
            out[:, j] = pc.fill_null(pc.add(codes, 1), 0).to_numpy(zero_copy_only=False)
        return out

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        check_kinds(schema, self.columns, self.kinds, source, self.family)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TabularEncoder:
        return cls(**data)


def _raw_numeric(data: pa.Table | pa.RecordBatch, columns: list[str], kinds: dict[str, str]) -> np.ndarray:
    x = np.empty((data.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        x[:, j] = encode_column(name, data.column(name), kinds[name], None)
    return x
