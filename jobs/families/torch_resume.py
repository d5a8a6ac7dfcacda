"""What a torch training loop needs to continue after a restart, as a checkpoint (see
:mod:`jobs.checkpoint`): everything that decides the epochs still to come.

- the weights, the optimizers' states (AdamW / SparseAdam moments and each group's learning
  rate, which the plateau rule lowers in place: the optimizer state is the LR schedule's state),
  the GradScaler's scale on CUDA with float16;
- the random states: python, numpy, torch's CPU generator (dropout), CUDA's where present, and
  the DataLoader's own shuffling generator;
- the early-stopping state: best loss, its epoch and weights, epochs without improvement, and
  the per-epoch history.

The tensors go into the payload (``torch.save``, read back with ``weights_only=True``: a
checkpoint is data, never code); the small scalars into the header's JSON state. On the CPU,
with deterministic algorithms, a resumed run continues bit for bit as the uninterrupted one.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class LoopState:
    """The early-stopping state of the loop, after ``epoch`` epochs."""

    epoch: int = 0
    best: float = math.inf
    best_epoch: int = 0
    waited: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        best = self.best if math.isfinite(self.best) else None  # strict JSON has no Infinity
        return {
            "epoch": self.epoch,
            "best": best,
            "best_epoch": self.best_epoch,
            "waited": self.waited,
            "history": self.history,
        }

    def load_json(self, state: dict[str, Any]) -> None:
        self.epoch, self.best_epoch, self.waited = int(state["epoch"]), int(state["best_epoch"]), int(state["waited"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.history = list(state["history"])


def _rng_states(device: torch.device, loader_gen: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device, loader_gen: torch.Generator) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    loader_gen.set_state(states["loader"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def snapshot(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    loader_gen: torch.Generator,
    loop: LoopState,
    device: torch.device,
) -> bytes:
    """The payload: weights, best weights, optimizer and scaler states, random states."""
    buf = io.BytesIO()
    torch.save(
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "best_state": {k: v.cpu() for k, v in loop.best_state.items()},
            "optimizers": [opt.state_dict() for opt in optimizers],
            "scaler": scaler.state_dict(),
            "rng": _rng_states(device, loader_gen),
        },
        buf,
    )
    return buf.getvalue()


def restore(
    payload: bytes,
    state: dict[str, Any],
    *,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    loader_gen: torch.Generator,
    device: torch.device,
) -> LoopState:
    """Put a checkpoint back into the live objects; the loop's state after its epoch."""
    saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if len(saved["optimizers"]) != len(optimizers):
        raise ValueError(f"the checkpoint has {len(saved['optimizers'])} optimizers, this model {len(optimizers)}")
    model.load_state_dict(saved["model"])
    for opt, opt_state in zip(optimizers, saved["optimizers"], strict=True):
        opt.load_state_dict(opt_state)  # moves the moments to the parameters' device
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    _set_rng_states(saved["rng"], device, loader_gen)
    loop = LoopState(best_state={k: v.to(device) for k, v in saved["best_state"].items()})
    loop.load_json(state)
    return loop
