"""The alert webhook: a JSON message POSTed to the Airflow HTTP connection ``mlbatch_alerts``.

``host`` holds the full URL (``https://hooks.example.com/services/...``) or a host name with
``schema`` = http/https; ``extra`` may hold headers (e.g. an ``Authorization`` header), which
HttpHook sends and never logs. Without that connection :func:`post` logs one line and returns
False. The webhook URL is a credential (Slack's carry their token in the path): before anything
is logged, the connection's password, URL path and query, and header values are handed to
Airflow's secrets masker and stripped from every line this module writes
(:mod:`mlbatch.redaction`); an unreachable webhook is logged by host only.

Two senders: a task that fails for good (:mod:`mlbatch.airflow.callbacks`) and a degraded
model (:mod:`mlbatch.stages.realized`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlbatch import redaction

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

CONN_ID = "mlbatch_alerts"
TIMEOUT_S = 10


def _host(conn: Connection) -> str:
    """Where the webhook is, without what makes it a credential."""
    host = conn.host or ""
    parts = urlsplit(host if "://" in host else f"{conn.schema or 'https'}://{host}")
    return parts.hostname or "?"


def post(message: dict[str, Any], conn_id: str = CONN_ID) -> bool:
    """POST ``message`` to the connection's URL; False (and a log line) when it cannot."""
    try:
        # At alert time only: the failure callbacks import this module on every DAG parse.
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        log.info("no failure alert sent: connection %r is not configured (%s)", conn_id, type(exc).__name__)
        return False
    secrets = redaction.connection_secrets(conn)
    redaction.register(secrets)
    try:
        # At alert time only: the failure callbacks import this module on every DAG parse.
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="POST", http_conn_id=conn_id)
        response = hook.run(
            endpoint=None,
            json=message,
            headers={"Content-Type": "application/json"},
            extra_options={"timeout": TIMEOUT_S, "check_response": False},
        )
    except Exception as exc:
        # The exception's text holds the URL (requests: "... url: /services/T0/B0/<token>").
        log.warning(
            "failure alert to connection %r (host %s) not sent: %s: %s",
            conn_id,
            _host(conn),
            type(exc).__name__,
            redaction.redact(str(exc), secrets),
        )
        return False
    if response.status_code >= 400:
        log.warning("failure alert to connection %r answered HTTP %s", conn_id, response.status_code)
        return False
    log.info("failure alert sent to connection %r (HTTP %s)", conn_id, response.status_code)
    return True
