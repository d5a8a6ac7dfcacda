"""Failure alerts against a real local HTTP server: the JSON body, a missing connection, a broken hook."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from mlbatch.airflow import callbacks
from mlbatch.maths import gates


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch) -> Iterator[type[_Hook]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/hooks/mlbatch"}
    monkeypatch.setenv("AIRFLOW_CONN_MLBATCH_ALERTS", json.dumps(conn))
    yield handler
    server.shutdown()


def _context(exc: BaseException) -> dict:
    ti = SimpleNamespace(
        dag_id="device_gender__score",
        task_id="features_gate",
        run_id="scheduled__2026-11-22T00:00:00+00:00",
        map_index=-1,
        try_number=1,
        log_url="http://airflow.example/dags/device_gender__score/runs/x/tasks/features_gate?try_number=1",
    )
    return {"ti": ti, "exception": exc, "ds": "2026-11-22"}


def _gate_failure() -> gates.GateFailed:
    checks = [gates.at_least("rows", 161_244, 10_000_000), gates.at_most("max_null_fraction", 0.01, 0.2)]
    return gates.GateFailed("device_gender.features[score]", checks)


def test_failed_gate_posts_json_with_its_failed_checks_and_log_url(webhook):
    callbacks.on_task_failure(_context(_gate_failure()))
    [hit] = webhook.received
    assert hit["path"] == "/hooks/mlbatch"
    assert hit["headers"]["Content-Type"] == "application/json"
    msg = hit["json"]
    assert (msg["dag_id"], msg["task_id"], msg["try_number"], msg["ds"]) == (
        "device_gender__score",
        "features_gate",
        1,
        "2026-11-22",
    )
    assert msg["run_id"] == "scheduled__2026-11-22T00:00:00+00:00"
    assert "1 of 2 checks failed" in msg["error"]
    assert "FAIL rows: observed 161,244, threshold >= 10,000,000" in msg["error"]
    assert msg["log_url"].endswith("tasks/features_gate?try_number=1")
    assert msg["text"].startswith("mlbatch: device_gender__score.features_gate failed")


def test_long_errors_are_cut(webhook):
    callbacks.on_task_failure(_context(RuntimeError("x" * 10_000)))
    error = webhook.received[0]["json"]["error"]
    assert len(error) < callbacks.MAX_ERROR_CHARS + 100 and "more characters in the log" in error


def test_no_connection_is_a_log_line_and_no_error(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_MLBATCH_ALERTS", raising=False)
    with caplog.at_level(logging.INFO, logger="mlbatch.airflow.callbacks"):
        callbacks.on_task_failure(_context(_gate_failure()))
    assert "connection 'mlbatch_alerts' is not configured" in caplog.text


def test_a_failing_webhook_never_raises(webhook, caplog):
    webhook.status = 500
    with caplog.at_level(logging.INFO, logger="mlbatch.airflow.callbacks"):
        callbacks.on_task_failure(_context(_gate_failure()))
    assert len(webhook.received) == 1 and "answered HTTP 500" in caplog.text
    assert callbacks.post({"x": 1}) is False


def test_an_unreachable_webhook_never_raises(monkeypatch, caplog):
    conn = {"conn_type": "http", "host": "http://127.0.0.1:9/nowhere"}  # discard port: connection refused
    monkeypatch.setenv("AIRFLOW_CONN_MLBATCH_ALERTS", json.dumps(conn))
    with caplog.at_level(logging.INFO, logger="mlbatch.airflow.callbacks"):
        callbacks.on_task_failure({"exception": ValueError("boom")})
    assert "not sent" in caplog.text
