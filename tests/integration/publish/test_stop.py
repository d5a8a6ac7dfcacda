"""A stopped publish task stops its statements in the app DB (MariaDB 10.11 for Aurora).

The publish runs in the worker as a StageOperator; Airflow calls its ``on_kill`` on mark-failed,
clear, ``execution_timeout`` and SIGTERM, from another thread of control (a signal handler, the
timeout's). Here a publish is made slow (its load trickles in, or its upsert waits for a row an
application session has locked) in a thread, and the operator's ``on_kill`` is called from the
test's thread: it must return in seconds, and then nothing of the publish may run on in the
server, the model's named lock must be free, the tables must be as they were, and a rerun must
publish the day.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from mlbatch.airflow import operators
from mlbatch.backends.appdb import mysql_publish
from mlbatch.backends.appdb.mysql_sql import model_lock
from mlbatch.backends.appdb.publisher import PublishStopped
from mlbatch.stages.publish import publish
from mlbatch.stages.score import predictions_gate
from sqlalchemy import create_engine, text

from tests.support.publish import (
    CONTEXT,
    MODEL,
    Blocker,
    PublishTask,
    fabricate,
    log_rows,
    run_day,
    table_rows,
    wait_for,
)

# MySQL's stop: KILL QUERY / KILL of the load and upsert sessions (PostgreSQL's: test_postgres.py).
pytestmark = pytest.mark.appdb("mariadb")


TABLE = f"{MODEL}_predictions"


def statements(url: str) -> list[tuple[int, str]]:
    """Every statement of another session that mentions the model's tables."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT ID, INFO FROM information_schema.PROCESSLIST "
                    "WHERE ID <> CONNECTION_ID() AND INFO LIKE :pattern"
                ),
                {"pattern": f"%{MODEL}%"},
            )
            return [(int(r[0]), str(r[1])) for r in rows]
    finally:
        engine.dispose()


def lock_is_free(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT IS_FREE_LOCK(:name)"), {"name": model_lock(TABLE)}).scalar() == 1
    finally:
        engine.dispose()


def trickling_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The day's TSV reaches the pipes 2 KiB every 0.1 s: LOAD DATA LOCAL runs for minutes."""
    real = mysql_publish.tsv_writer

    def slow(*args: Any, **kwargs: Any) -> Any:
        write = real(*args, **kwargs)

        class Trickle:
            def __init__(self, out: Any):
                self.out = out

            def write(self, data: Any) -> None:
                view = memoryview(data).cast("B")
                for at in range(0, len(view), 2048):
                    self.out.write(view[at : at + 2048])
                    self.out.flush()
                    time.sleep(0.1)

        return lambda out: write(Trickle(out))

    monkeypatch.setattr(mysql_publish, "tsv_writer", slow)


@pytest.mark.parametrize("slow", ["load trickles in", "upsert waits for a locked row"])
def test_on_kill_stops_a_running_publish_and_frees_its_lock(env, spec, mariadb_url, monkeypatch, slow):
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 20_000)), [0.21] * 20_000))
    before, before_log = table_rows(env), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(10_000, 30_000)), [0.27] * 20_000, version="v2")
    predictions_gate(ctx)
    blocker = None
    if slow == "load trickles in":
        trickling_load(monkeypatch)
        running = "LOAD DATA LOCAL INFILE"
    else:
        # An application session holds a row the day replaces: the upsert waits (and retries)
        # for about 12 s of short lock waits, a statement running in the server all along.
        blocker = Blocker(mariadb_url, f"SELECT * FROM {TABLE} WHERE entity_key = 15000 FOR UPDATE")
        running = f"INSERT INTO `{TABLE}`"
    try:
        task = PublishTask(ctx, monkeypatch)
        wait_for(running, lambda: any(running in sql for _, sql in statements(mariadb_url)))
        started = time.monotonic()
        task.op.on_kill()  # what the task runner's SIGTERM handler (or the timeout) calls
        assert time.monotonic() - started < 5, "on_kill must return before the supervisor's SIGKILL"

        wait_for("the publish to end", lambda: not task.thread.is_alive())
        assert isinstance(task.error, PublishStopped), task.error
        assert "stopped (on_kill)" in str(task.error)
        wait_for("no statement of the publish in the processlist", lambda: not statements(mariadb_url))
        assert lock_is_free(mariadb_url)
        assert table_rows(env) == before  # nothing of the day became visible
        assert log_rows(env) == before_log
    finally:
        if blocker is not None:
            blocker.close()
    monkeypatch.undo()  # the real writers and run_context again

    result = run_day(ctx)  # the rerun (the task's retry) publishes the day
    assert result["rows"] == 20_000 and result["path"] == "daily"
    rows = {r[0]: r for r in table_rows(env)}
    assert len(rows) == 30_000 and rows[9_999][1] == "2026-11-20" and rows[10_000][1:3] == ("2026-11-21", "v2")
    assert [(r[1], r[3]) for r in log_rows(env)] == [("2026-11-20", 20_000), ("2026-11-21", 20_000)]


def test_execution_timeout_in_the_worker_stops_the_publish(env, spec, mariadb_url, monkeypatch):
    """The task runner's own timeout wrapper (SIGALRM raises AirflowTaskTimeout in the main thread,
    here while it waits for the parallel loads; then on_kill): the loads are killed instead of
    streaming on, and the timeout stays the task's error."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 20_000)), [0.21] * 20_000))
    before, before_log = table_rows(env), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(10_000, 30_000)), [0.27] * 20_000, version="v2")
    predictions_gate(ctx)
    trickling_load(monkeypatch)  # about 15 s of loading
    monkeypatch.setattr(operators, "run_context", lambda spec_path, context: ctx)
    op = operators.StageOperator(
        task_id="publish", spec_path="unused.yaml", target="publish:publish", execution_timeout=timedelta(seconds=4)
    )
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout):
        _run_execute_callable(CONTEXT, op.execute, op)
    assert time.monotonic() - started < 12, "the loads were waited for instead of killed"
    wait_for("no statement of the publish in the processlist", lambda: not statements(mariadb_url))
    assert lock_is_free(mariadb_url)
    assert table_rows(env) == before and log_rows(env) == before_log
    monkeypatch.undo()
    assert run_day(ctx)["rows"] == 20_000


def test_sigterm_to_the_worker_stops_the_publish_running_in_its_main_thread(env, spec, mariadb_url, monkeypatch):
    """Mark-failed or clear of a running task: the supervisor sends SIGTERM, the task runner's
    handler calls on_kill in the main thread, where the publish itself waits (SIGKILL 5 s later)."""
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 20_000)), [0.21] * 20_000))
    before, before_log = table_rows(env), log_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(10_000, 30_000)), [0.27] * 20_000, version="v2")
    predictions_gate(ctx)
    trickling_load(monkeypatch)
    monkeypatch.setattr(operators, "run_context", lambda spec_path, context: ctx)
    op = operators.StageOperator(task_id="publish", spec_path="unused.yaml", target="publish:publish")
    handled: list[float] = []

    def on_term(signum: int, frame: Any) -> None:  # the task runner's _on_term
        started = time.monotonic()
        op.on_kill()
        handled.append(time.monotonic() - started)

    def terminate_once_loading() -> None:
        wait_for("the load", lambda: any("LOAD DATA" in sql for _, sql in statements(mariadb_url)))
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        threading.Thread(target=terminate_once_loading, daemon=True).start()
        with pytest.raises(PublishStopped):
            op.execute(CONTEXT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handled and handled[0] < 5, handled
    wait_for("no statement of the publish in the processlist", lambda: not statements(mariadb_url))
    assert lock_is_free(mariadb_url)
    assert table_rows(env) == before and log_rows(env) == before_log
    monkeypatch.undo()
    assert run_day(ctx)["rows"] == 20_000


def test_stop_without_a_running_publish_does_nothing(env, spec):
    env.publisher.stop()  # nothing started: no error, no connection needed
    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 100))))
    env.publisher.stop()  # finished: nothing left to stop
    assert len(table_rows(env)) == 100


def test_a_session_interrupted_mid_statement_is_killed_on_its_way_out(env, spec, mariadb_url, monkeypatch):
    """execution_timeout in the worker raises AirflowTaskTimeout inside whatever statement is
    running; the publish's own unwinding must end that statement in the server (and free the
    lock) before on_kill is even called."""
    from sqlalchemy import event

    run_day(fabricate(env, spec, "2026-11-20", list(range(0, 1000)), [0.21] * 1000))
    before = table_rows(env)
    ctx = fabricate(env, spec, "2026-11-21", list(range(500, 1500)), [0.27] * 1000)
    predictions_gate(ctx)

    class Timeout(Exception):  # stands for AirflowTaskTimeout, raised by SIGALRM mid-statement
        pass

    def interrupt(conn, cursor, statement, parameters, *args):
        if statement.startswith(f"INSERT INTO `{TABLE}`"):
            # The statement is sent; the client stops waiting for its answer, as when the
            # timeout's exception is raised in the middle of the socket read.
            cursor.connection._execute_command(3, cursor.mogrify(statement, parameters))  # COM_QUERY
            raise Timeout("execution_timeout")

    event.listen(env.appdb.publish_engine, "before_cursor_execute", interrupt)
    try:
        with pytest.raises(Timeout):
            publish(ctx)
    finally:
        event.remove(env.appdb.publish_engine, "before_cursor_execute", interrupt)
    wait_for("no statement of the publish in the processlist", lambda: not statements(mariadb_url), 30)
    assert lock_is_free(mariadb_url)
    assert table_rows(env) == before
    assert run_day(ctx)["rows"] == 1000
