"""What the train and score jobs' ``main`` share: run once, exit by the outcome.

A job's output prefix holds a success marker once the job is complete. A launcher that retries a
finished job (a lost container, an ECS retry after the marker was written) then finds the marker
and the job exits 0 at once, printing what the marker recorded, without redoing the work.
An input error (:class:`~jobs.io.JobInputError`: a bad config, a missing column) exits 2 with its
message on stderr; any other exception is a crash, with its traceback (exit 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from jobs import io
from jobs.io import JobInputError

EXIT_INPUT = 2


def log(job: str, msg: str) -> None:
    print(f"{job}: {msg}", file=sys.stderr, flush=True)


def run_once(
    job: str,
    output: str,
    marker: str,
    work: Callable[[], dict[str, Any]],
    *,
    complete: str,
    tidy: Callable[[], None] | None = None,
) -> int:
    """Do ``work`` unless ``marker`` exists, print its summary (JSON on stdout) and return the exit code.

    ``complete`` says what the marker means in the log ("this shard is complete"); ``tidy`` runs
    when the marker is found (train: remove a checkpoint a kill left between marker and removal).
    """
    try:
        if io.exists(marker):
            log(job, f"{marker} exists: {complete}")
            if tidy is not None:
                tidy()
            print(json.dumps({"status": "already_done", "output": output, "marker": io.read_json(marker)}))
            return 0
        summary = work()
    except JobInputError as exc:
        print(f"{job}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(json.dumps(summary))
    return 0
