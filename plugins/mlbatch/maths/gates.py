"""Gates: the checks that follow every stage.

A gate runs all its checks, then fails once with every failure listed (check name, observed
value, threshold), so one run tells the on-call engineer everything that is wrong. The
failing task stops its DAG run: nothing downstream runs or writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from mlbatch.errors import EXIT_GATE, MlbatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    observed: Any
    threshold: Any
    detail: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"{mark} {self.name}: observed {_fmt(self.observed)}, threshold {_fmt(self.threshold)}"
        return f"{text} ({self.detail})" if self.detail else text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


class GateFailed(MlbatchError, RuntimeError):
    """A gate blocked the pipeline. ``str()`` lists every failed check with its numbers."""

    exit_code = EXIT_GATE  # `mlbatch` exits 1: the data, not the code or the input, stopped the run

    def __init__(self, gate: str, checks: list[Check]):
        self.gate = gate
        self.checks = checks
        failed = [c for c in checks if not c.ok]
        shown = failed[:20]  # bounded: a wide table must not produce a megabyte of error
        more = f"\n  ... and {len(failed) - len(shown)} more" if len(failed) > len(shown) else ""
        super().__init__(
            f"gate {gate} blocked: {len(failed)} of {len(checks)} checks failed\n  "
            + "\n  ".join(c.line() for c in shown)
            + more
        )


def evaluate(gate: str, checks: Iterable[Check]) -> dict[str, Any]:
    """Log every check; raise :class:`GateFailed` if any failed; else return a summary."""
    checks = list(checks)
    for c in checks:
        (log.info if c.ok else log.error)("gate %s: %s", gate, c.line())
    if not all(c.ok for c in checks):
        raise GateFailed(gate, checks)
    return {"gate": gate, "passed": len(checks), "checks": [asdict(c) for c in checks]}


def at_least(name: str, observed: float, minimum: float, detail: str = "") -> Check:
    return Check(name, observed >= minimum, observed, f">= {_fmt(minimum)}", detail)


def at_most(name: str, observed: float, maximum: float, detail: str = "") -> Check:
    return Check(name, observed <= maximum, observed, f"<= {_fmt(maximum)}", detail)


def equal(name: str, observed: Any, expected: Any, detail: str = "") -> Check:
    return Check(name, observed == expected, observed, f"== {_fmt(expected)}", detail)
