"""Failure alerts: a task that fails for good POSTs a JSON message to a webhook.

The webhook is the Airflow HTTP connection ``mlbatch_alerts``: ``host`` holds the full URL
(``https://hooks.example.com/services/...``) or a host name with ``schema`` = http/https;
``extra`` may hold headers (e.g. an ``Authorization`` header), which HttpHook sends and never
logs. Without that connection the callback logs one line and does nothing. A callback must
never fail the task a second time: every error is logged, none is raised.

The message: ``{"dag_id", "task_id", "run_id", "map_index", "try_number", "ds", "error",
"log_url", "text"}``. ``error`` is the exception text, which for a gate lists every failed
check with its observed value and threshold; ``text`` is a one-line summary for chat tools.
This module is imported at DAG parse time: it imports nothing heavy at the top.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

CONN_ID = "mlbatch_alerts"
MAX_ERROR_CHARS = 4000  # a webhook message, not a log file
TIMEOUT_S = 10


def failure_message(context: dict[str, Any]) -> dict[str, Any]:
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
        "ds": context.get("ds"),
        "error": error,
        "log_url": log_url,
    }
    first = error.splitlines()[0] if error else ""
    msg["text"] = f"mlbatch: {dag_id}.{task_id} failed (run {msg['run_id']}, try {msg['try_number']}): {first}"
    return msg


def post(message: dict[str, Any], conn_id: str = CONN_ID) -> bool:
    """POST ``message`` to the connection's URL; False (and a log line) when it cannot."""
    try:
        from airflow.sdk import BaseHook

        BaseHook.get_connection(conn_id)
    except Exception as exc:
        log.info("no failure alert sent: connection %r is not configured (%s)", conn_id, type(exc).__name__)
        return False
    try:
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="POST", http_conn_id=conn_id)
        response = hook.run(
            endpoint=None,
            json=message,
            headers={"Content-Type": "application/json"},
            extra_options={"timeout": TIMEOUT_S, "check_response": False},
        )
    except Exception as exc:
        log.warning("failure alert to connection %r not sent: %s: %s", conn_id, type(exc).__name__, exc)
        return False
    if response.status_code >= 400:
        log.warning("failure alert to connection %r answered HTTP %s", conn_id, response.status_code)
        return False
    log.info("failure alert sent to connection %r (HTTP %s)", conn_id, response.status_code)
    return True


def on_task_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback`` of every mlbatch task; never raises."""
    try:
        post(failure_message(context))
    except Exception:
        log.exception("failure alert callback failed (the task's own failure is unchanged)")
