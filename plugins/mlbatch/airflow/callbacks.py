"""Failure alerts: a task that fails for good POSTs a JSON message to the alert webhook.

The webhook, its connection (``mlbatch_alerts``) and how its URL is kept out of the logs are
:mod:`mlbatch.backends.webhook`'s. Without that connection the callback logs one line and does
nothing. A callback must never fail the task a second time: every error is logged, none is raised.

The message: ``{"dag_id", "task_id", "run_id", "map_index", "try_number", "ds", "error",
"log_url", "text"}``. ``error`` is the exception text, which for a gate lists every failed
check with its observed value and threshold; ``text`` is a one-line summary for chat tools.

This module is imported at DAG parse time: it imports nothing heavy at the top.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlbatch import redaction
from mlbatch.airflow.operators import run_day
from mlbatch.backends.webhook import CONN_ID as CONN_ID  # re-exported: the DAG docs name it
from mlbatch.backends.webhook import post

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000  # a webhook message, not a log file


def failure_message(context: Context) -> dict[str, Any]:
    """The JSON body for a failed task, from the Airflow callback context."""
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error (no exception in the context)"
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + f"... ({len(error) - MAX_ERROR_CHARS} more characters in the log)"
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None)
    task_id = getattr(ti, "task_id", None)
    try:
        log_url = ti.log_url if ti is not None else None
    except Exception:  # the URL needs [api] base_url; an alert without it is still worth sending
        log_url = None
    msg = {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "ds": _day(context),
        "error": error,
        "log_url": log_url,
    }
    first = error.splitlines()[0] if error else ""
    msg["text"] = f"mlbatch: {dag_id}.{task_id} failed (run {msg['run_id']}, try {msg['try_number']}): {first}"
    return msg


def _day(context: Context) -> str | None:
    """The run's day as its tasks see it (runs without a logical date have no ``ds``)."""
    try:
        return run_day(context)
    except Exception:
        return context.get("ds")


def on_task_failure(context: Context) -> None:
    """``on_failure_callback`` of every mlbatch task; never raises."""
    try:
        post(failure_message(context))
    except Exception as exc:
        # No traceback: its frames' text may hold the webhook URL.
        log.error(
            "failure alert callback failed (the task's own failure is unchanged): %s: %s",
            type(exc).__name__,
            redaction.redact(str(exc)),
        )
