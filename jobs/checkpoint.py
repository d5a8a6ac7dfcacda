"""Training checkpoints under the job's own output prefix, so that a restarted task resumes.

A Spot interruption (or any kill) of a train task must cost the minutes since the last
checkpoint, not the run. The families call :class:`Checkpointer` from their training loops
(xgboost: every N boosting rounds; torch: every epoch) and ask it, once, for a checkpoint to
resume from.

- Where: ``<output prefix>/checkpoint/checkpoint.bin``: the prefix names the job (model and
  version), so a checkpoint can only be found by a rerun of the same job.
- Atomic: one object, header and payload together (``MAGIC``, the header's length, the header as
  JSON, the family's payload), written through :func:`jobs.io.write_bytes` (local: temp file then
  rename; S3: a PUT is visible only once complete). A kill mid-write leaves the previous one.
  Each save replaces the last: one checkpoint is kept.
- Safe: the header holds a fingerprint of the config (without the checkpoint window), the input
  data and the code version. A checkpoint whose model, version or fingerprint differ from this
  run's is never resumed from: the job logs why and starts fresh (its first save overwrites it).
- Cheap: a save is due every ``every`` steps or ``seconds`` of wall time, whichever comes first,
  but never while the checkpoints so far would have cost more than ``max_fraction`` of the
  training time (tiny epochs would otherwise spend most of their time writing checkpoints).
- Removed by the train job once its success marker is written (a marker makes any leftover moot).
- On notice: ECS stops a task on a Spot instance being reclaimed with SIGTERM, and SIGKILL up to
  2 minutes later. After :func:`save_on_sigterm`, a SIGTERM during training makes the next step
  end write a checkpoint and exit 143, so the interruption costs seconds, not the window; outside
  training SIGTERM ends the job at once, as it always did.

Configured by the train config's ``params["checkpoint"]``: ``false`` (off), or a mapping of
``every``, ``seconds``, ``max_fraction``. Standard library and jobs.io only.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from jobs import io
from jobs.io import JobInputError

MAGIC = b"MLBCKPT1"
FOLDER = "checkpoint"
NAME = f"{FOLDER}/checkpoint.bin"
PARAM = "checkpoint"  # the key in the train config's params
DEFAULT_SECONDS = 60.0
DEFAULT_MAX_FRACTION = 0.05
_HEADER = struct.Struct(">I")


TERMINATED = 128 + signal.SIGTERM  # the exit code of a job stopped by SIGTERM
_notice = {"training": False, "asked": False}  # set by the SIGTERM handler; read at step ends


def log(msg: str) -> None:
    print(f"train: {msg}", file=sys.stderr, flush=True)


def save_on_sigterm() -> None:
    """Install the SIGTERM handler (the train job's main does; in-process callers do not)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _notice["training"]:
        _notice["asked"] = True  # only a flag: the training loop saves at its next step end
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not training: die of it, as without a handler
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class Window:
    """When a save is due. ``every`` None: the family's own default (rounds or epochs)."""

    enabled: bool = True
    every: int | None = None
    seconds: float = DEFAULT_SECONDS
    max_fraction: float = DEFAULT_MAX_FRACTION

    @classmethod
    def parse(cls, raw: Any) -> Window:
        """``params["checkpoint"]``: absent/true (defaults), false (off), or a mapping."""
        if raw is None or raw is True:
            return cls()
        if raw is False:
            return cls(enabled=False)
        if not isinstance(raw, dict) or set(raw) - {"every", "seconds", "max_fraction"}:
            raise JobInputError(
                f"params.{PARAM} must be true, false or a mapping of every, seconds, max_fraction; got {raw!r}"
            )
        every, seconds = raw.get("every"), raw.get("seconds", DEFAULT_SECONDS)
        fraction = raw.get("max_fraction", DEFAULT_MAX_FRACTION)
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise JobInputError(f"params.{PARAM}.every must be an integer >= 1, got {every!r}")
        for name, value in (("seconds", seconds), ("max_fraction", fraction)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise JobInputError(f"params.{PARAM}.{name} must be a number > 0, got {value!r}")
        return cls(True, every, float(seconds), float(fraction))


@dataclass(frozen=True)
class Resume:
    """A checkpoint of this very job: resume after ``step`` (rounds or epochs done)."""

    step: int
    total: int
    written_at: str
    state: dict[str, Any]  # the family's small state (JSON): early stopping, history
    payload: bytes  # the family's model (and optimizer) bytes


def fingerprint(**parts: Any) -> str:
    """A stable hash of JSON-able parts (bytes are hashed first): what a checkpoint must match."""
    canon = {k: hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else v for k, v in parts.items()}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, default=str).encode()).hexdigest()


def encode(header: dict[str, Any], payload: bytes) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _HEADER.pack(len(head)) + head + payload


def decode(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload); ValueError when ``blob`` is not a checkpoint."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _HEADER.size:
        raise ValueError("not a checkpoint (no magic bytes)")
    (n,) = _HEADER.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _HEADER.size
    header = json.loads(blob[start : start + n])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, blob[start + n :]


class Checkpointer:
    """One job's checkpoint: find it, decide when to save, save it, remove it."""

    def __init__(self, prefix: str, identity: dict[str, str], fingerprint: str, window: Window | None = None):
        self.uri = io.join_uri(prefix, NAME)
        self.identity = identity  # {"model": ..., "version": ...}
        self.fingerprint = fingerprint
        self.window = window or Window()
        self.every = 1
        self.saves = 0
        self.save_seconds = 0.0
        self.bytes_written = 0
        self.resumed_from: int | None = None  # the step this run resumed after, if it did
        # From here to finish(), a SIGTERM waits for the next step end (the fit's set-up included:
        # it ends at the first step, with that step's checkpoint).
        _notice["training"] = True
        self._last_step = 0
        self._last_time = self._started = time.monotonic()

    def begin(self, step: int, default_every: int) -> None:
        """Start counting the window at ``step`` (0, or the step resumed from)."""
        self.every = self.window.every or default_every
        self._last_step = step
        self._last_time = self._started = time.monotonic()

    def finish(self) -> None:
        """Training is over: SIGTERM ends the job at once again."""
        _notice["training"] = False

    def due(self, step: int) -> bool:
        if _notice["asked"]:
            if not self.window.enabled:
                log(f"SIGTERM at step {step}: checkpoints are off; exiting")
                raise SystemExit(TERMINATED)
            return True
        if not self.window.enabled:
            return False
        now = time.monotonic()
        if now - self._last_time >= self.window.seconds:
            return True
        # The cost cap: the saves so far must stay within max_fraction of the time trained.
        affordable = self.save_seconds <= self.window.max_fraction * (now - self._started)
        return step - self._last_step >= self.every and affordable

    def save(self, step: int, total: int, state: dict[str, Any], payload: bytes) -> None:
        """Write the checkpoint after ``step`` of at most ``total`` steps. A failed write is
        logged, not raised: training goes on, and the previous checkpoint stays."""
        started = time.monotonic()
        header = {
            **self.identity,
            "fingerprint": self.fingerprint,
            "step": step,
            "total": total,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "state": state,
        }
        blob = encode(header, payload)
        try:
            io.write_bytes(self.uri, blob)
        except OSError as exc:
            log(f"checkpoint at step {step} not written ({exc}); training goes on")
            return
        finally:
            self._last_step, self._last_time = step, time.monotonic()
        took = time.monotonic() - started
        self.saves += 1
        self.save_seconds += took
        self.bytes_written = len(blob)
        log(f"checkpoint at {step} of {total}: {len(blob) / 2**20:.2f} MiB in {took:.3f} s ({self.uri})")
        if _notice["asked"]:
            log(f"SIGTERM: stopping after the checkpoint at {step} of {total}; a rerun resumes from it")
            raise SystemExit(TERMINATED)

    def resume(self, unit: str = "round") -> Resume | None:
        """This job's checkpoint, or None (none, unreadable, or another job's: the log says why)."""
        if not self.window.enabled:
            return None
        try:
            if not io.exists(self.uri):
                return None
            header, payload = decode(io.read_bytes(self.uri))
        except (JobInputError, OSError, ValueError) as exc:
            log(f"ignoring the checkpoint {self.uri}: unreadable ({exc}); starting fresh")
            return None
        why = self._mismatch(header)
        if why:
            log(f"ignoring the checkpoint {self.uri}: {why}; starting fresh")
            return None
        self.resumed_from = int(header["step"])
        log(
            f"resuming from checkpoint at {unit} {header['step']} of {header['total']} (written {header['written_at']})"
        )
        return Resume(int(header["step"]), int(header["total"]), str(header["written_at"]), header["state"], payload)

    def _mismatch(self, header: dict[str, Any]) -> str:
        for key, mine in self.identity.items():
            if header.get(key) != mine:
                return f"written by another job ({key} {header.get(key)!r}, this job's is {mine!r})"
        if header.get("fingerprint") != self.fingerprint:
            return (
                f"written for other params, data or code (fingerprint {str(header.get('fingerprint'))[:12]}, "
                f"this run's {self.fingerprint[:12]})"
            )
        if not isinstance(header.get("step"), int) or not isinstance(header.get("state"), dict):
            return "its header has no step or state"
        return ""

    def clear(self) -> None:
        """Remove the checkpoint (the job succeeded); a leftover is harmless, so errors are not."""
        try:
            io.delete_folder(self.uri.rsplit("/", 1)[0])
        except OSError as exc:
            log(f"checkpoint {self.uri} not removed ({exc}); the success marker makes it moot")

    def summary(self) -> dict[str, Any]:
        """What checkpointing cost this run (for the job's summary and metrics)."""
        return {
            "resumed_from": self.resumed_from,
            "saves": self.saves,
            "seconds": round(self.save_seconds, 3),
            "last_bytes": self.bytes_written,
        }
