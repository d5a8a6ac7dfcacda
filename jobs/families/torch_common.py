"""What the torch families share: device and precision, seeds, the training loop, inference, I/O.

- Device: CUDA when ``torch.cuda.is_available()`` (``MLBATCH_TORCH_DEVICE`` overrides), else CPU.
- Precision: on CUDA, autocast to bfloat16 where the GPU supports it, else float16 with a
  GradScaler (float16's range needs loss scaling, bfloat16's does not); full float32 on the CPU.
  ``params["amp"] = false`` turns it off.
- Seeds: python, numpy and torch from the job's seed, and deterministic algorithms on the CPU,
  so the same inputs give the same weights (the model version is a hash of the inputs).
- Training: AdamW on shuffled mini-batches (a seeded DataLoader over row indices, pinned memory
  on CUDA), cross-entropy, the learning rate cut on a validation-loss plateau, early stopping on
  the validation loss with ``patience`` epochs; the weights of the best epoch are the ones kept.
  Batch size, epoch budget and patience follow the training table's size (:func:`schedule`).
- Inference: batches under ``torch.inference_mode()``, softmax in float32.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from jobs.checkpoint import Checkpointer
from jobs.cpus import cores
from jobs.families.torch_resume import LoopState, restore, snapshot
from jobs.io import JobInputError, join_uri, read_bytes, write_bytes

# inputs for the model's forward(), built from an array of row indices (CPU tensors)
BatchFn = Callable[[np.ndarray], Sequence[torch.Tensor]]
M = TypeVar("M", bound=nn.Module)

# ``None`` means "derived from the training table" (see :func:`schedule`); a number is used as is.
TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": None,
    "max_epochs": None,
    "patience": None,
    # Reduce-on-plateau: after ``lr_patience`` epochs without improvement the learning rate is
    # multiplied by ``lr_factor``; training stops after ``patience`` such epochs. A smaller step
    # usually finds a lower loss than the one that plateaued, so the patience window is spent on it.
    "lr_patience": None,
    "lr_factor": 0.3,
    "min_delta": 1e-4,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "grad_clip": 1.0,
    "amp": True,
    # Intra-op threads while training. Mini-batches of a few hundred rows are too small for
    # threading to pay: measured on a busy 2-core machine, 10 ms/step on 1 thread, 122 on 2.
    "threads": 1,
}

# The derived schedule. A large table (production: millions of rows) gets what it always had,
# batches of MAX_BATCH and an epoch budget of MIN_EPOCHS with a short patience: there one epoch
# is thousands of optimizer steps, and more epochs would multiply its cost for little gain. A
# small table gets smaller batches and an epoch budget sized so that it sees about STEP_BUDGET
# optimizer steps (1,257 rows in batches of 512 were 3 steps an epoch, 90 in all: training ended
# while the validation loss still fell). Patience is counted in epochs, so it too grows as an
# epoch shrinks: a noisy validation loss on a few hundred rows must not stop a run after 3 epochs
# of 4 steps each.
MIN_BATCH, MAX_BATCH = 32, 512
BATCHES_PER_EPOCH = 32  # aim: at least this many steps an epoch, until batches reach MIN_BATCH
STEP_BUDGET = 6000  # optimizer steps the epoch budget aims at (never fewer than MIN_EPOCHS)
MIN_EPOCHS, MAX_EPOCHS = 30, 400
PATIENCE_STEPS = 400  # patience, in optimizer steps, turned into epochs between the two bounds below
MIN_PATIENCE, MAX_PATIENCE = 3, 20


def auto_batch_size(n_train: int) -> int:
    """The power of two nearest n_train / BATCHES_PER_EPOCH, within [MIN_BATCH, MAX_BATCH]."""
    target = max(n_train, 1) / BATCHES_PER_EPOCH
    return int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(target, 1.0))))))


def schedule(params: dict[str, Any], n_train: int) -> dict[str, int]:
    """batch_size, max_epochs, patience and lr_patience for ``n_train`` rows: the params' own
    values where set, else derived (the rule above). These are what the model records."""
    batch = int(params["batch_size"] or auto_batch_size(n_train))
    steps = max(1, math.ceil(n_train / batch))  # optimizer steps an epoch
    max_epochs = int(params["max_epochs"] or min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps))))
    patience = int(params["patience"] or min(MAX_PATIENCE, max(MIN_PATIENCE, math.ceil(PATIENCE_STEPS / steps))))
    # Half the patience: one reduction, and a second half-window to use the smaller step.
    lr_patience = int(params.get("lr_patience") or max(1, patience // 2))
    return {"batch_size": batch, "max_epochs": max_epochs, "patience": patience, "lr_patience": lr_patience}


def log(msg: str) -> None:
    print(f"train: {msg}", file=sys.stderr, flush=True)


def detect_device() -> torch.device:
    forced = os.environ.get("MLBATCH_TORCH_DEVICE", "").strip()
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype; None: float32 throughout

    @classmethod
    def choose(cls, device: torch.device, amp: bool = True) -> Precision:
        if device.type != "cuda" or not amp:
            return cls(device, None)
        return cls(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def scoring_threads() -> int:
    """Threads for inference: the container's cores (``MLBATCH_TORCH_THREADS`` overrides)."""
    return int(os.environ.get("MLBATCH_TORCH_THREADS") or cores())


def seed_everything(seed: int, device: torch.device, threads: int = 1) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    else:
        torch.use_deterministic_algorithms(True)


def to_device(tensors: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in tensors]


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    best_valid_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    schedule: dict[str, int] = field(default_factory=dict)  # the batch size and budgets used


def _loader(n: int, batch_fn: BatchFn, y: torch.Tensor, batch_size: int, seed: int, pin: bool) -> DataLoader[int]:
    def collate(rows: list[int]) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        idx = np.asarray(rows, dtype=np.int64)
        return batch_fn(idx), y[idx]

    return DataLoader(
        range(n),  # type: ignore[arg-type]  # a range is a map-style dataset (len, getitem); the stub wants Dataset
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
        pin_memory=pin,
    )


def _batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))


def fit_loop(
    model: nn.Module,
    *,
    train_fn: BatchFn,
    y_train: np.ndarray,
    valid_fn: BatchFn,
    y_valid: np.ndarray,
    optimizers: list[torch.optim.Optimizer],
    params: dict[str, Any],
    seed: int,
    precision: Precision,
    checkpoint: Checkpointer | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of its best validation epoch.
    With a ``checkpoint``: resumed after the epoch of this job's checkpoint where one exists, and
    checkpointed at epoch ends (see :mod:`jobs.families.torch_resume`)."""
    started = time.monotonic()
    device = precision.device
    model.to(device)
    scaler = precision.scaler()
    y_t = torch.as_tensor(y_train, dtype=torch.long)
    y_v = torch.as_tensor(y_valid, dtype=torch.long)
    plan = schedule(params, len(y_train))
    log(
        f"{len(y_train)} training rows: batches of {plan['batch_size']}, up to {plan['max_epochs']} epochs, "
        f"patience {plan['patience']} (learning rate x{float(params.get('lr_factor', 0.3))} after "
        f"{plan['lr_patience']})"
    )
    loader = _loader(len(y_train), train_fn, y_t, plan["batch_size"], seed, device.type == "cuda")
    dense = [p for p in model.parameters() if p.requires_grad and not _is_sparse_param(model, p)]
    live = {"model": model, "optimizers": optimizers, "scaler": scaler, "loader_gen": loader.generator}
    loop = LoopState()
    resumed = checkpoint.resume("epoch") if checkpoint is not None else None
    if resumed is not None:
        loop = restore(resumed.payload, resumed.state, device=device, **live)
    if checkpoint is not None:
        checkpoint.begin(loop.epoch, 1)
    for epoch in range(loop.epoch + 1, plan["max_epochs"] + 1):
        train_loss = _train_epoch(model, loader, optimizers, scaler, precision, dense, params)
        valid_loss = evaluate_loss(model, valid_fn, y_v, max(plan["batch_size"] * 4, 2048), precision)
        lr = optimizers[0].param_groups[0]["lr"]  # the first optimizer's (torch_text: the embedding's)
        loop.history.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "lr": lr})
        log(f"epoch {epoch}: train loss {train_loss:.4f}, valid loss {valid_loss:.4f}")
        loop.epoch = epoch
        if _stop_early(loop, valid_loss, model, optimizers, plan, params):
            break
        if checkpoint is not None and epoch < plan["max_epochs"] and checkpoint.due(epoch):
            checkpoint.save(epoch, plan["max_epochs"], loop.to_json(), snapshot(loop=loop, device=device, **live))
    model.load_state_dict(loop.best_state)
    seconds = round(time.monotonic() - started, 3)
    return FitResult(loop.best_epoch, len(loop.history), loop.best, loop.history, seconds, plan)


def _train_epoch(
    model: nn.Module,
    loader: DataLoader[int],
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    precision: Precision,
    dense: list[torch.nn.Parameter],
    params: dict[str, Any],
) -> float:
    """One pass over the shuffled training rows; the mean training loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    device = precision.device
    total, seen = 0.0, 0
    for inputs, yb in loader:
        inputs, yb = to_device(inputs, device), yb.to(device, non_blocking=True)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_fn(model(*inputs).float(), yb)
        scaler.scale(loss).backward()
        if params.get("grad_clip"):
            for opt in optimizers:
                scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(dense, float(params["grad_clip"]))
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        total += float(loss.detach()) * len(yb)
        seen += len(yb)
    return total / max(seen, 1)


def _stop_early(
    loop: LoopState,
    valid_loss: float,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    plan: dict[str, int],
    params: dict[str, Any],
) -> bool:
    """Keep the best weights; cut the learning rate on a plateau; True: stop (patience spent)."""
    if valid_loss < loop.best - float(params["min_delta"]):
        loop.best, loop.best_epoch, loop.waited = valid_loss, loop.epoch, 0
        loop.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False
    loop.waited += 1
    if loop.waited >= plan["patience"]:
        log(f"early stop: no validation improvement for {loop.waited} epochs; best epoch {loop.best_epoch}")
        return True
    if loop.waited % plan["lr_patience"] == 0:
        lr_factor = float(params.get("lr_factor", 0.3))
        scale_lr(optimizers, lr_factor)
        log(f"no validation improvement for {loop.waited} epochs: learning rate x{lr_factor}")
    return False


def scale_lr(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] *= factor


def _is_sparse_param(model: nn.Module, p: torch.nn.Parameter) -> bool:
    return any(isinstance(m, nn.EmbeddingBag | nn.Embedding) and m.sparse and m.weight is p for m in model.modules())


def evaluate_loss(model: nn.Module, batch_fn: BatchFn, y: torch.Tensor, batch_size: int, precision: Precision) -> float:
    model.eval()
    total = 0.0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.inference_mode(), precision.autocast():
        for idx in _batches(len(y), batch_size):
            logits = model(*to_device(batch_fn(idx), precision.device)).float()
            total += float(loss_fn(logits, y[idx].to(precision.device)))
    return total / max(len(y), 1)


def predict_proba(model: nn.Module, batch_fn: BatchFn, n: int, batch_size: int, precision: Precision) -> np.ndarray:
    """(n, classes) float64 probabilities, computed in batches of ``batch_size`` rows."""
    model.eval()
    out: list[np.ndarray] = []
    with torch.inference_mode(), precision.autocast():
        for idx in _batches(n, batch_size):
            logits = model(*to_device(batch_fn(idx), precision.device)).float()
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
    if not out:
        return np.empty((0, 0))
    p = np.concatenate(out).astype(np.float64)
    proba: np.ndarray = p / p.sum(axis=1, keepdims=True)  # numpy types a keepdims sum as Any
    return proba


def save_state(model: nn.Module, uri: str) -> None:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    write_bytes(uri, buf.getvalue())


def load_state(model: M, prefix: str, name: str, device: torch.device) -> M:
    uri = join_uri(prefix, name)
    try:
        state = torch.load(io.BytesIO(read_bytes(uri)), map_location=device, weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:  # wrong shapes, not a state_dict, corrupt file
        raise JobInputError(f"{uri}: not a state_dict this model ({type(model).__name__}) can load: {exc}") from exc
    return model.to(device).eval()


def library_versions() -> dict[str, str]:
    return {"torch_version": torch.__version__}
