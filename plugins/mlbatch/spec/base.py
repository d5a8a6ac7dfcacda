"""The spec's base model, shared by :mod:`mlbatch.spec` and its sections in other modules."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # Unknown fields are errors: a typo in a threshold must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)
