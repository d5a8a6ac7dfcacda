"""The operators' contract: the day of every kind of run, what started it, and how external work
is started, waited for (in the worker or the triggerer), resumed, and stopped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout, TaskDeferred
from mlbatch.airflow import operators
from mlbatch.airflow.operators import ExternalWorkOperator, run_day, triggered_by
from mlbatch.backends.store import ObjectStore
from mlbatch.stages.external import ExternalWork


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
    finish_fails = False
    wait_s = 0.0
    started = 0

    def start(self) -> dict[str, Any] | None:
        self.log.append("start")
        if self.finished_now:
            return {"done": "at start"}
        Recorder.started += 1
        self.handle = {"job": f"job-{Recorder.started}"}
        return None

    def wait(self) -> None:
        self.log.append("wait")
        time.sleep(self.wait_s)

    def trigger(self) -> Any:
        return self.trigger_to_return

    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.log.append(f"finish {self.handle} {event}")
        if self.finish_fails:
            raise RuntimeError(f"{self.handle} is still running after its trigger fired")
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
    Recorder.finish_fails = False
    Recorder.wait_s = 0.0
    Recorder.started = 0
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


def _deferred(op) -> None:
    Recorder.trigger_to_return = object()
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)
    Recorder.log.clear()


# What Airflow 3.3 resumes a deferred task with when the deferral's timeout passes (the scheduler's
# check_trigger_timeouts) and when its trigger fails (Trigger.submit_failure): next_method
# "__fail__", the reason in next_kwargs (a str enum; plain text once read back from the database).
DEFERRAL_TIMEOUT = {"error": TriggerFailureReason.TRIGGER_TIMEOUT}
TRIGGER_FAILURE = {"error": "Trigger failure", "traceback": ["Traceback (most recent call last):\n", "boom\n"]}


@pytest.mark.parametrize("error", [TriggerFailureReason.TRIGGER_TIMEOUT, "Trigger timeout"])
def test_a_deferral_that_times_out_stops_the_work_it_waited_for(op, error) -> None:
    _deferred(op)
    # A fresh operator, as in the worker that resumes the task: the handle comes from the run's state.
    resumed = ExternalWorkOperator(task_id="train", spec_path="unused.yaml", target="unused:Recorder")
    with pytest.raises(TaskDeferralTimeout):
        resumed.resume_execution(TRIGGER_FAIL_REPR, {"error": error}, CONTEXT)
    assert Recorder.log == ["stop {'job': 'job-1'}"]
    assert op._ctx.env.store.get_json("runs/started__train.json")["stopped"]["why"] == "the deferral timed out"


def test_a_failed_trigger_stops_the_work_it_waited_for(op) -> None:
    _deferred(op)
    with pytest.raises(TaskDeferralError):
        op.resume_execution(TRIGGER_FAIL_REPR, TRIGGER_FAILURE, CONTEXT)
    assert Recorder.log == ["stop {'job': 'job-1'}"]


def test_a_trigger_that_gave_up_waiting_stops_the_work(op) -> None:
    _deferred(op)
    Recorder.finish_fails = True
    event = {"status": "failed", "message": "waiter: max attempts reached"}
    with pytest.raises(RuntimeError, match="still running"):
        op.resume_execution("execute_complete", {"handle": {"job": "job-1"}, "event": event}, CONTEXT)
    assert Recorder.log[-1] == "stop {'job': 'job-1'}"


def test_a_failed_work_reported_by_a_successful_wait_is_not_stopped_again(op) -> None:
    _deferred(op)
    Recorder.finish_fails = True
    with pytest.raises(RuntimeError):
        op.resume_execution("execute_complete", {"handle": {"job": "job-1"}, "event": {"status": "success"}}, CONTEXT)
    assert not any(line.startswith("stop") for line in Recorder.log)


@pytest.mark.parametrize("how", ["deferral timeout", "trigger failure", "on_kill"])
def test_a_retry_after_a_stop_starts_fresh_even_if_the_work_still_reads_as_running(op, how) -> None:
    _deferred(op)
    if how == "on_kill":
        op.on_kill()
    else:
        with pytest.raises(TaskDeferralError if how == "trigger failure" else TaskDeferralTimeout):
            op.resume_execution(
                TRIGGER_FAIL_REPR, TRIGGER_FAILURE if how == "trigger failure" else DEFERRAL_TIMEOUT, CONTEXT
            )
    Recorder.log.clear()
    Recorder.still_running = True  # e.g. a cancelled Redshift statement not yet ABORTED
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)  # the retry
    assert Recorder.log == ["start"]  # never asked to reattach to what was stopped
    assert deferred.value.kwargs == {"handle": {"job": "job-2"}}
    assert "stopped" not in op._ctx.env.store.get_json("runs/started__train.json")  # the new work's handle


def test_execution_timeout_in_the_worker_stops_the_work(op) -> None:
    """The task runner's own wrapper: AirflowTaskTimeout raised in the wait, then on_kill."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    Recorder.wait_s = 30.0
    op.execution_timeout = timedelta(seconds=1)
    with pytest.raises(AirflowTaskTimeout):
        _run_execute_callable(CONTEXT, op.execute, op)
    assert Recorder.log == ["start", "wait", "stop {'job': 'job-1'}"]
    assert op._ctx.env.store.get_json("runs/started__train.json")["stopped"]["why"] == "on_kill"


def test_a_stage_s_on_kill_stops_the_publish_it_made_and_connects_to_nothing_else() -> None:
    stopped: list[str] = []

    class Env:
        publisher_made = False

    stage = operators.StageOperator(task_id="publish", spec_path="x.yaml", target="publish:publish")
    stage.on_kill()  # nothing ran
    stage._ctx = SimpleNamespace(env=Env())
    stage.on_kill()  # the stage made no publisher: nothing to stop, nothing created
    stage._ctx.env.publisher = SimpleNamespace(stop=lambda: stopped.append("stop"))
    stage.on_kill()
    assert stopped == ["stop"]


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


# --- StageOperator's report: checked when the task is made, never lost silently -------------------
REPORT_CTX = SimpleNamespace(model="device_gender", run_id="manual__1")


def _reporting(monkeypatch, report: Any) -> operators.StageOperator:
    from mlbatch.reporting import reports

    monkeypatch.setattr(reports, "training_report", report)
    return operators.StageOperator(
        task_id="model_gate", spec_path="x.yaml", target="train:model_gate", report="training_report"
    )


def test_a_task_naming_an_unknown_report_is_not_made() -> None:
    from mlbatch.airflow.pipeline import PipelineError

    with pytest.raises(PipelineError, match="step 'model_gate': report 'training_reprot' is no run report"):
        operators.StageOperator(task_id="model_gate", spec_path="x.yaml", target="t:f", report="training_reprot")


def test_a_report_s_bug_fails_the_task_instead_of_vanishing(monkeypatch) -> None:
    def broken(ctx: Any) -> str:
        return ctx.no_such_attribute

    op = _reporting(monkeypatch, broken)
    with pytest.raises(AttributeError, match="no_such_attribute"):
        op.with_report(REPORT_CTX, lambda: {"passed": 3})


def test_a_report_s_io_failure_keeps_the_task_s_success_and_is_logged(monkeypatch, caplog) -> None:
    def unreachable(ctx: Any) -> str:
        raise OSError("s3://bucket/models/x/report.html: connection reset")

    op = _reporting(monkeypatch, unreachable)
    assert op.with_report(REPORT_CTX, lambda: {"passed": 3}) == {"passed": 3}
    assert "could not write the training_report for run manual__1" in caplog.text
    assert "connection reset" in caplog.text  # the traceback is in the task log


def test_a_failed_step_keeps_its_own_error_and_notes_the_report_s(monkeypatch, caplog) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from mlbatch.maths.gates import Check, GateFailed

    op = _reporting(monkeypatch, lambda ctx: {}["version"])

    def rejected() -> Any:
        raise GateFailed("device_gender.model", [Check("auc", False, 0.5, ">= 0.7")])

    with pytest.raises(AirflowFailException) as caught:  # still the gate's verdict: no retries
        op.with_report(REPORT_CTX, rejected)
    assert "could not be written either: KeyError('version')" in "".join(caught.value.__cause__.__notes__)
    assert "the training_report failed too" in caplog.text

    def crashed() -> Any:
        raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError, match="the job failed") as crash:
        op.with_report(REPORT_CTX, crashed)
    assert "KeyError('version')" in crash.value.__notes__[0]
