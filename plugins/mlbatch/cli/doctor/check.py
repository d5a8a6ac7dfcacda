"""One result of ``mlbatch doctor`` (:class:`Check`) and how a check describes an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlbatch.redaction import redact

Status = Literal["ok", "FAIL", "warn", "skip"]


@dataclass(frozen=True)
class Check:
    boundary: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.boundary:<13} {self.detail}"
        return text + (f"\n{'':<20}fix: {self.fix}" if self.fix else "")


def describe_error(exc: BaseException) -> str:
    # A driver's message can quote a URL; never the password.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {first}")[:300]
