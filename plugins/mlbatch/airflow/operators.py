"""The operators every mlbatch task is made of.

- :class:`StageOperator` runs one stage function of :mod:`mlbatch.stages` (the same function
  ``mlbatch run`` calls) with the run's :class:`~mlbatch.stages.context.RunContext`.
- :class:`ExternalWorkOperator` runs a stage step whose work happens outside the worker (a job
  on the launcher, a warehouse statement: :mod:`mlbatch.stages.external`), shaped like the
  amazon provider's ``EcsRunTaskOperator`` and ``RedshiftDataOperator``: it starts (or
  reattaches to) the work, then waits in the worker or, when the backend can
  (ECS, Redshift), defers the wait to the triggerer. Stops stop, in every path (see the class).

A :class:`StageOperator`'s ``on_kill`` stops what its stage runs in the worker's own name
elsewhere: the publish's statements in the app DB (:meth:`mlbatch.backends.appdb.publisher.Publisher.stop`:
KILL QUERY, then KILL, of its sessions, which frees the model's named lock).

The run's day (``ds`` of every stage) is :func:`run_day`: the logical date when the run has one,
else the day of its ``run_after`` in UTC (asset-triggered runs and API runs triggered with
``"logical_date": null`` have none).

Imported by DAG files at parse time: the stage modules (pandas, pyarrow, ...) are imported
inside ``execute`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferralError, TaskDeferralTimeout

from mlbatch import redaction
from mlbatch.airflow.pipeline import check_report, resolve, resolve_report
from mlbatch.airflow.ui import ReportLink, record
from mlbatch.spec import load_spec, runparams

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from mlbatch.airflow.pipeline import StageArg
    from mlbatch.stages.context import RunContext

log = logging.getLogger(__name__)

#: A step's result: its XCom value (a stage's small JSON summary, or what the next task maps over).
Summary = Any
#: The JSON-serialisable identity of outside work (:attr:`mlbatch.stages.external.ExternalWork.handle`).
Handle = dict[str, Any]


class Work(Protocol):
    """What :class:`ExternalWorkOperator` calls on its step: an
    :class:`mlbatch.stages.external.ExternalWork` (named, not imported: the stages load at run time)."""

    handle: Handle | None

    def start(self) -> dict[str, Any] | None: ...
    def wait(self) -> None: ...
    def trigger(self) -> BaseTrigger | None: ...
    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def stop(self) -> None: ...
    def reattach(self, handle: Handle) -> bool: ...
    def resume(self, handle: Handle | None) -> Work: ...  # the deferral's kwargs: start's handle


def run_day(context: Context) -> str:
    """The day a run works on: its logical date, else the UTC day of its ``run_after``.

    Scheduled and backfill runs have a logical date (a CronTriggerTimetable's trigger time, so
    the daily run of 2026-11-22 00:00 works on 2026-11-22). Asset-triggered runs and API runs
    with ``"logical_date": null`` have none: they work on the day they were created for.
    """
    logical = context.get("logical_date")
    if logical is None:
        dag_run = context.get("dag_run")
        logical = getattr(dag_run, "run_after", None)
    if not isinstance(logical, datetime):
        raise RuntimeError(f"the run has neither a logical date nor a run_after: {context.get('run_id')!r}")
    if logical.tzinfo is None:
        logical = logical.replace(tzinfo=UTC)  # Airflow's datetimes are UTC
    return logical.astimezone(UTC).date().isoformat()


def triggered_by(context: Context, model: str) -> dict[str, dict[str, Any]]:
    """The extra of the newest triggering event of each of the model's assets, by kind.

    An asset-triggered run collects every event since the previous run; the newest is the state
    of the moment the run was created for (e.g. the label sync it must train on).
    """
    events = context.get("triggering_asset_events") or {}
    prefix = f"mlbatch.{model}."
    found: dict[str, dict[str, Any]] = {}
    for asset in events:
        name = getattr(asset, "name", "") or ""
        if not name.startswith(prefix) or not events[asset]:
            continue
        newest = max(events[asset], key=lambda e: e.timestamp)
        found[name.removeprefix(prefix)] = dict(newest.extra or {})
    return found


def run_context(spec_path: str, context: Context) -> RunContext:
    """The stage functions' RunContext, built inside the task (never at parse time)."""
    # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
    from mlbatch.backends.env import Environment
    from mlbatch.stages.context import RunContext

    redaction.register_environment()  # credentials in the environment never reach the task log
    spec = load_spec(spec_path)
    return RunContext(
        env=Environment.from_env(),
        spec=spec,
        ds=run_day(context),
        run_id=context["run_id"],
        dag_id=context["dag"].dag_id,
        params=dict(context.get("params") or {}),
        triggered_by=triggered_by(context, spec.name),
    )


def _report_io_errors() -> tuple[type[BaseException], ...]:
    """Errors of a report's I/O, not of its code: the file system or S3 (``OSError``, the store's
    ``StoreError``), the app DB's connection (SQLAlchemy's ``OperationalError``)."""
    # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
    from sqlalchemy.exc import OperationalError

    # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
    from mlbatch.backends.store import StoreError

    return (OSError, StoreError, OperationalError)


class StageOperator(BaseOperator):
    """Run ``mlbatch.stages.<module>.<function>(ctx, *stage_args)``; return its small summary.

    A gate's verdict (:class:`mlbatch.maths.gates.GateFailed`) fails the task without retries: the
    same data gives the same verdict. A task that ``writes`` (what users see: a writer step of
    :mod:`mlbatch.airflow.pipeline`) is skipped in a dry run (:func:`mlbatch.spec.runparams.skipped`).
    ``report`` names a function of :mod:`mlbatch.reporting.reports` (one of :data:`mlbatch.airflow.pipeline.REPORTS`,
    checked when the task is made) written after the stage, also when it raised (a rejected model
    gets its report); its URI joins the XCom. How a failing report ends: :meth:`_write_report`.
    """

    ui_color = "#e8f4fd"
    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        spec_path: str,
        target: str,
        stage_args: Sequence[StageArg] = (),
        report: str | None = None,
        writes: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.target = target
        self.stage_args = list(stage_args)
        self.report = report
        self.writes = writes
        self._ctx: RunContext | None = None  # the running stage's, for on_kill
        if report is not None:
            check_report(self.task_id, report)  # a typo fails the DAG file's parse, not silently the report
            self.operator_extra_links = (ReportLink(),)

    def execute(self, context: Context) -> Summary:
        self.skip_if_dry_run(context)
        ctx = self._ctx = run_context(self.spec_path, context)
        return self.with_report(ctx, lambda: self.call_stage(ctx), context)

    def on_kill(self) -> None:
        """Stop the stage's work in the app DB (mark failed, clear, ``execution_timeout``,
        SIGTERM): a publish's statements would otherwise run on in the server after this
        process dies, holding the model's lock that the retry then waits for. Returns within
        seconds (the supervisor sends SIGKILL 5 s after SIGTERM)."""
        env = getattr(self._ctx, "env", None)
        # Only a publisher the stage made (a cached_property in the Environment's __dict__): on_kill
        # never connects to anything just to find there is nothing to stop.
        publisher = vars(env).get("publisher") if env is not None else None
        stop = getattr(publisher, "stop", None)
        if stop is not None:
            log.warning("%s: stopping the app DB publish (on_kill)", self.task_id)
            try:
                stop()
            except Exception:
                log.exception("%s: could not stop the publish; see the app DB's processlist", self.task_id)

    def call_stage(self, ctx: RunContext) -> Summary:

        return resolve(self.target)(ctx, *self.stage_args)

    def skip_if_dry_run(self, context: Context) -> None:
        if runparams.skipped(context.get("params") or {}, self.writes):
            name = runparams.DRY_RUN.name
            raise AirflowSkipException(f"dry run: {self.task_id} writes, so it is skipped (params.{name} = true)")

    def with_report(self, ctx: RunContext, stage: Callable[[], Summary], context: Context | None = None) -> Summary:
        """Run ``stage()`` as a gated step, then write the report (if any), whatever the outcome."""
        # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
        from mlbatch.maths.gates import GateFailed

        try:
            result = stage()
        except GateFailed as exc:
            self._report_after_failure(ctx, context, exc)

            # The same data gives the same verdict: retrying a blocked gate only delays the alert.
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            self._report_after_failure(ctx, context, exc)
            raise
        uri = self._write_report(ctx, context)
        return {**result, "report": uri} if isinstance(result, dict) and uri else result

    def _write_report(self, ctx: RunContext, context: Context | None = None) -> str | None:
        """Run ``mlbatch.reporting.reports.<report>(ctx)``; give the task its Report button (mlbatch.airflow.ui).

        Decision: the report is written after the step's work is done (the day published, the
        gate's verdict recorded), so an I/O failure while writing it (:func:`_report_io_errors`:
        the object store or the app DB out of reach) is logged with its traceback and the task
        keeps its outcome: failing it would make Airflow retry the whole step for a page, which
        the next run rewrites anyway. Anything else (an unknown report, a TypeError, an
        AttributeError, a KeyError) is a bug and raises: the task fails instead of the report
        silently never appearing.
        """
        if self.report is None:
            return None

        write = resolve_report(self.task_id, self.report)
        try:
            uri = write(ctx)
            if uri is None:  # nothing to report on this run (realized_reports: no day measured)
                return None
            if context is not None:
                record(context, uri)
        except _report_io_errors():
            log.exception("%s: could not write the %s for run %s", ctx.model, self.report, ctx.run_id)
            return None
        log.info("%s: %s written to %s", ctx.model, self.report.replace("_", " "), uri)
        return uri

    def _report_after_failure(self, ctx: RunContext, context: Context | None, failure: BaseException) -> None:
        """Write the report of a step that failed: the step's own error stays the task's error.

        A report that fails too (even by a bug) never replaces it, which would turn a gate's
        verdict into a retried error; it is logged with its traceback and noted on the step's error.
        """
        try:
            self._write_report(ctx, context)
        except Exception as exc:
            log.exception("%s: the %s failed too, after the step failed", ctx.model, self.report)
            failure.add_note(f"the {self.report} could not be written either: {exc!r} (traceback in the task log)")


class ExternalWorkOperator(StageOperator):
    """Run a :class:`~mlbatch.stages.external.ExternalWork` step (``target`` names its class,
    e.g. ``"train:TrainJob"``), stopping the work when the task is stopped.

    ``deferrable`` (default True): wait in the triggerer when the backend offers a trigger (ECS
    task, Redshift statement); the local process, Docker and the embedded warehouse always wait
    in the worker.

    Stops stop, in every path (Airflow 3.3's task runner and scheduler):

    - waiting in the worker: mark failed, clear and SIGTERM reach :meth:`on_kill` (the task
      runner's SIGTERM handler), and so does ``execution_timeout`` (``AirflowTaskTimeout``, then
      ``on_kill``);
    - deferred: mark failed or clear call the trigger's ``on_kill`` in the triggerer (StopTask,
      CancelStatement). The deferral's timeout (``execution_timeout``, passed to ``defer``) and a
      failed trigger both resume the task with ``next_method="__fail__"`` and ``next_kwargs``
      ``{"error": "Trigger timeout"}`` or ``{"error": "Trigger failure", "traceback": [...]}``;
      ``BaseOperator.resume_execution`` raises ``TaskDeferralTimeout`` or ``TaskDeferralError``
      (neither a subclass of the other): :meth:`resume_execution` stops the work on both;
    - a trigger that fired without the work ending (its waiter gave up: an event whose status
      is not ``success``) stops it when :meth:`execute_complete` fails.

    The work's handle is kept in the run's state (``started__<task>[__<map index>]`` in the
    object store) so that a retry reattaches to work a dead worker left running. Work this
    operator stopped is recorded there as ``stopped``: a retry starts fresh instead of waiting
    on it (a cancelled Redshift statement may read as running for a moment; a stopped ECS task
    is not listed by ``desiredStatus=RUNNING`` anyway, StopTask sets its desired status at once).
    """

    ui_color = "#fdf3e8"

    def __init__(self, *, deferrable: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self._work: Work | None = None
        self._state: str | None = None  # the run-state name of this task's handle, for on_kill

    def _step(self, ctx: RunContext) -> Work:

        work: Work = resolve(self.target)(ctx, *self.stage_args)  # the ExternalWork class ``target`` names
        return work

    def execute(self, context: Context) -> Summary:
        self.skip_if_dry_run(context)
        ctx = self._ctx = run_context(self.spec_path, context)
        self._state = self._state_name(context)
        work = self._work = self._step(ctx)
        earlier = self._remembered(ctx, self._state)
        if earlier is not None and work.reattach(earlier):
            log.info("%s: reattaching to %s, started by an earlier attempt and still running", self.task_id, earlier)
        else:
            done = work.start()
            if done is not None:
                return done
            ctx.save_state(self._state, {"handle": work.handle})
        trigger = work.trigger() if self.deferrable else None
        if trigger is not None:
            log.info("%s: waiting in the triggerer for %s", self.task_id, work.handle)
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                kwargs={"handle": work.handle},
                timeout=self.execution_timeout,
            )
        work.wait()
        return work.finish()

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, handle: Handle | None = None
    ) -> Summary:
        ctx = self._ctx = run_context(self.spec_path, context)
        self._state = self._state_name(context)
        work = self._work = self._step(ctx).resume(handle)
        try:
            return work.finish(event)
        except Exception:
            if isinstance(event, dict) and event.get("status") not in (None, "success"):
                # The trigger gave up waiting (or lost the work): the work may still run.
                self._stop(ctx, work, f"its trigger reported {event.get('status')!r}")
            raise

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Summary:

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (TaskDeferralTimeout, TaskDeferralError) as exc:
            # The deferral timed out (execution_timeout) or its trigger failed: the trigger is
            # gone, not the work. Only the error comes back: the handle is in the run's state.
            why = "the deferral timed out" if isinstance(exc, TaskDeferralTimeout) else "its trigger failed"
            self._stop_remembered(context, why)
            raise

    def on_kill(self) -> None:
        if self._work is not None and self._work.handle is not None:
            self._stop(self._ctx, self._work, "on_kill")

    def _stop(self, ctx: RunContext | None, work: Work, why: str) -> None:
        """Stop the work, then record in the run's state that it was stopped; never raises (the
        task's own error, or its kill, must go on)."""
        log.warning("%s: stopping %s (%s)", self.task_id, work.handle, why)
        try:
            work.stop()
        except Exception:
            log.exception("%s: could not stop %s; it may still run", self.task_id, work.handle)
            return
        if ctx is None or self._state is None:
            return
        try:
            stopped = {"why": why, "at": datetime.now(UTC).isoformat(timespec="seconds")}
            ctx.save_state(self._state, {"handle": work.handle, "stopped": stopped})
        except Exception:
            log.exception("%s: stopped %s but could not record it in the run's state", self.task_id, work.handle)

    def _state_name(self, context: Context) -> str:
        index = context["ti"].map_index
        return f"started__{self.task_id}" + (f"__{index}" if index is not None and index >= 0 else "")

    def _remembered(self, ctx: RunContext, state_name: str) -> Handle | None:
        """The handle an earlier attempt started, unless that work was stopped (start afresh)."""
        key = ctx.state_key(state_name)
        if not ctx.env.store.exists(key):
            return None
        state: dict[str, Any] = ctx.env.store.get_json(key)  # what _stop and execute saved
        if state.get("stopped"):
            log.info("%s: %s was stopped (%s): starting afresh", self.task_id, state["handle"], state["stopped"])
            return None
        handle: Handle = state["handle"]
        return handle

    def _stop_remembered(self, context: Context, why: str) -> None:
        try:
            ctx = self._ctx = run_context(self.spec_path, context)
            self._state = self._state_name(context)
            handle = self._remembered(ctx, self._state)
            if handle is None:
                return
            self._stop(ctx, self._step(ctx).resume(handle), why)
        except Exception:
            log.exception("%s: could not stop the work it started", self.task_id)
