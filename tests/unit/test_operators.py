"""The operators' contract: the day of every kind of run, what started it, and how external work
is started, waited for (in the worker or the triggerer), resumed, and stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferralError, TaskDeferred
from mlbatch import operators
from mlbatch.operators import ExternalWorkOperator, run_day, triggered_by
from mlbatch.stages.external import ExternalWork
from mlbatch.store import ObjectStore


def test_the_day_is_the_logical_date_when_there_is_one() -> None:
    run = SimpleNamespace(run_after=datetime(2026, 12, 2, 9, tzinfo=UTC))
    assert run_day({"logical_date": datetime(2026, 11, 22, tzinfo=UTC), "dag_run": run}) == "2026-11-22"


def test_runs_without_a_logical_date_work_on_their_run_after_day_in_utc() -> None:
    # Asset-triggered runs and API runs with "logical_date": null.
    tokyo = timezone(timedelta(hours=9))
    run = SimpleNamespace(run_after=datetime(2026, 12, 3, 7, 30, tzinfo=tokyo))  # 2026-12-02 22:30 UTC
    assert run_day({"logical_date": None, "dag_run": run}) == "2026-12-02"
    assert run_day({"dag_run": SimpleNamespace(run_after=datetime(2026, 12, 2, 23, 59))}) == "2026-12-02"


def test_a_run_with_no_date_at_all_is_an_error_naming_it() -> None:
    with pytest.raises(RuntimeError, match="manual__x"):
        run_day({"run_id": "manual__x", "dag_run": SimpleNamespace(run_after=None)})


def _event(extra: dict[str, Any], minute: int) -> SimpleNamespace:
    return SimpleNamespace(extra=extra, timestamp=datetime(2026, 12, 2, 10, minute, tzinfo=UTC))


def test_triggered_by_takes_the_newest_event_of_each_of_the_model_s_assets() -> None:
    from airflow.sdk import Asset

    labels = Asset(name="mlbatch.device_gender.labels")
    other = Asset(name="mlbatch.recipe_category.labels")
    events = {
        labels: [_event({"sync_id": "s-old"}, 1), _event({"sync_id": "s-new"}, 9), _event({"sync_id": "s-mid"}, 5)],
        other: [_event({"sync_id": "theirs"}, 2)],
    }
    assert triggered_by({"triggering_asset_events": events}, "device_gender") == {"labels": {"sync_id": "s-new"}}
    assert triggered_by({}, "device_gender") == {}


# --- ExternalWorkOperator with a work that records what was asked of it ---------------------------
class Recorder(ExternalWork):
    log: list[str] = []
    trigger_to_return: Any = None
    finished_now = False
    still_running = False

    def start(self) -> dict[str, Any] | None:
        self.log.append("start")
        if self.finished_now:
            return {"done": "at start"}
        self.handle = {"job": "job-1"}
        return None

    def wait(self) -> None:
        self.log.append("wait")

    def trigger(self) -> Any:
        return self.trigger_to_return

    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.log.append(f"finish {self.handle} {event}")
        return {"done": "finished"}

    def stop(self) -> None:
        self.log.append(f"stop {self.handle}")

    def reattach(self, handle: dict[str, Any]) -> bool:
        self.log.append(f"reattach? {handle}")
        if self.still_running:
            self.handle = handle
        return self.still_running


@pytest.fixture
def op(tmp_path, monkeypatch) -> ExternalWorkOperator:
    Recorder.log = []
    Recorder.trigger_to_return = None
    Recorder.finished_now = False
    Recorder.still_running = False
    store = ObjectStore((tmp_path / "objects").as_uri())
    saved: dict[str, Any] = {}
    ctx = SimpleNamespace(
        env=SimpleNamespace(store=store),
        save_state=lambda name, value: saved.__setitem__(name, value) or store.put_json(f"runs/{name}.json", value),
        state_key=lambda name: f"runs/{name}.json",
    )
    monkeypatch.setattr(operators, "run_context", lambda spec_path, context: ctx)
    monkeypatch.setattr(ExternalWorkOperator, "_step", lambda self, c: Recorder(c))
    return ExternalWorkOperator(task_id="train", spec_path="unused.yaml", target="unused:Recorder")


CONTEXT = {"params": {}, "ti": SimpleNamespace(map_index=-1)}


def test_work_done_at_start_returns_without_waiting(op) -> None:
    Recorder.finished_now = True
    assert op.execute(CONTEXT) == {"done": "at start"}
    assert Recorder.log == ["start"]


def test_without_a_trigger_the_worker_waits(op) -> None:
    assert op.execute(CONTEXT) == {"done": "finished"}
    assert Recorder.log == ["start", "wait", "finish {'job': 'job-1'} None"]


def test_with_a_trigger_the_task_defers_and_resumes_with_its_handle(op) -> None:
    Recorder.trigger_to_return = trigger = object()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    assert deferred.value.trigger is trigger and deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"handle": {"job": "job-1"}}
    assert Recorder.log == ["start"]  # no wait in the worker
    # The triggerer fired; a worker (maybe another one) resumes the task.
    out = op.resume_execution("execute_complete", {**deferred.value.kwargs, "event": {"status": "success"}}, CONTEXT)
    assert out == {"done": "finished"}
    assert Recorder.log[-1] == "finish {'job': 'job-1'} {'status': 'success'}"


def test_a_deferrable_false_operator_never_defers(op) -> None:
    Recorder.trigger_to_return = object()
    op.deferrable = False
    assert op.execute(CONTEXT) == {"done": "finished"}


def test_on_kill_stops_the_started_work(op) -> None:
    op.on_kill()  # nothing started yet: nothing to stop
    assert Recorder.log == []
    Recorder.trigger_to_return = object()
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)
    op.on_kill()
    assert Recorder.log == ["start", "stop {'job': 'job-1'}"]


def test_a_deferral_that_times_out_stops_the_work_it_waited_for(op) -> None:
    Recorder.trigger_to_return = object()
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)
    # Airflow resumes a timed-out deferral with only the error: the handle comes from the run's state.
    with pytest.raises(TaskDeferralError):
        op.resume_execution("__fail__", {"error": "Trigger failure"}, CONTEXT)
    assert Recorder.log[-1] == "stop {'job': 'job-1'}"


def test_a_retry_reattaches_to_work_an_earlier_attempt_left_running(op) -> None:
    Recorder.trigger_to_return = object()
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)  # the first attempt; then its worker dies
    Recorder.log.clear()
    Recorder.still_running = True
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)  # the retry
    assert Recorder.log == ["reattach? {'job': 'job-1'}"]  # no second start
    assert deferred.value.kwargs == {"handle": {"job": "job-1"}}


def test_a_retry_starts_fresh_when_the_earlier_work_ended(op) -> None:
    Recorder.trigger_to_return = object()
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)
    Recorder.log.clear()
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)  # stopped by on_kill, or failed: not running any more
    assert Recorder.log == ["reattach? {'job': 'job-1'}", "start"]


def test_dry_run_skips_writers_only() -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    writer = ExternalWorkOperator(task_id="export", spec_path="x.yaml", target="publish:Export", writes=True)
    with pytest.raises(AirflowSkipException, match="export writes"):
        writer.skip_if_dry_run({"params": {"dry_run": True}})
    writer.skip_if_dry_run({"params": {"dry_run": False}})  # a real run writes
    ExternalWorkOperator(task_id="unload_scoring", spec_path="x.yaml", target="features:Unload").skip_if_dry_run(
        {"params": {"dry_run": True}}
    )
