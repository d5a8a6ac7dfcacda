"""Stage steps whose work runs outside the worker: a job (process, container, ECS task) or a
warehouse statement (Redshift UNLOAD, COPY).

Such a step has four phases, so that the same code serves three callers:

- ``start()`` hands the work to its backend and returns at once: either the result (nothing to
  wait for: a success marker found, a manifest already written, an embedded backend that did the
  work in-process) or ``None`` with :attr:`handle` set (JSON: what identifies the outside work);
- ``wait()`` blocks until the work ends (the CLI, and workers on backends that cannot defer);
- ``trigger()`` returns an Airflow trigger that waits in the triggerer instead (ECS, Redshift),
  or ``None`` when the backend cannot defer;
- ``finish(event)`` checks the outcome and returns the step's small result.

``stop()`` stops the outside work (Airflow's ``on_kill``: mark failed, clear, a timeout, SIGTERM;
and a deferral that timed out or whose trigger failed). It must return within a few seconds: the
task supervisor follows SIGTERM with SIGKILL after 5 s. Work once stopped is never waited on
again: the operator records the stop with the handle in the run's state, and a retry starts
afresh instead of offering the handle to :meth:`ExternalWork.reattach`.

:meth:`run` is the synchronous composition the CLI uses. The operator that runs these steps in
Airflow is :class:`mlbatch.airflow.operators.ExternalWorkOperator`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

from mlbatch.backends.launchers import JobRequest
from mlbatch.stages.context import RunContext


class ExternalWork(ABC):
    #: JSON-serialisable identity of the outside work, set by :meth:`start` (``None`` before, and
    #: when there was nothing to wait for). It travels through a deferral in the trigger's kwargs.
    handle: dict[str, Any] | None = None

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    @abstractmethod
    def start(self) -> dict[str, Any] | None:
        """Start (or find) the work; the result when there is nothing to wait for, else None."""

    @abstractmethod
    def wait(self) -> None:
        """Block until the started work has ended (successfully or not)."""

    def trigger(self) -> Any | None:
        """An Airflow trigger that waits for the work in the triggerer; None: wait in the worker."""
        return None

    @abstractmethod
    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check how the work ended (``event``: the trigger's payload after a deferral)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the started work now (quickly: the caller may be killed seconds later)."""

    def reattach(self, handle: dict[str, Any]) -> bool:
        """Take over work an earlier attempt started (its handle) if it is still running.

        For work whose backend cannot find it again by itself: a Redshift statement is known by
        its id alone. Launchers find their jobs by the job's token, so jobs answer False here (a
        stopped ECS task is not among them: StopTask sets its desired status to STOPPED at once,
        and the launcher lists ``desiredStatus=RUNNING`` tasks only). Never offered a handle
        whose work was stopped.
        """
        return False

    def resume(self, handle: dict[str, Any]) -> ExternalWork:
        """This step in a new process after a deferral, with the handle its start returned."""
        self.handle = handle
        return self

    def run(self) -> dict[str, Any]:
        """Start, wait, finish: the synchronous path (CLI, embedded stack, tests)."""
        done = self.start()
        if done is not None:
            return done
        try:
            self.wait()
        except KeyboardInterrupt:
            self.stop()  # Ctrl-C in `mlbatch run` stops the job or statement too
            raise
        return self.finish()


class LaunchedJob(ExternalWork):
    """A job run by the environment's launcher (local process, Docker, ECS): ``request`` says
    what to run; :meth:`done` records the step's result once the job succeeded (or was found
    done by its success marker)."""

    request: JobRequest

    @abstractmethod
    def done(self, reused: bool) -> dict[str, Any]: ...

    def start(self) -> dict[str, Any] | None:
        handle = self.ctx.env.launcher.submit(self.request)
        if handle is None:
            return self.done(reused=True)
        self.handle = {"job": handle}
        return None

    def wait(self) -> None:
        self.ctx.env.launcher.wait(self.request, self._job())

    def trigger(self) -> Any | None:
        return self.ctx.env.launcher.trigger(self.request, self._job())

    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if event is not None:  # after a deferral the trigger only said "stopped": check how
            self.ctx.env.launcher.result(self.request, self._job(), event)
        return self.done(reused=False)

    def stop(self) -> None:
        if self.handle is not None:
            self.ctx.env.launcher.stop(self.request, self._job())

    def _job(self) -> str:
        if self.handle is None:
            raise RuntimeError(f"{self.request.job_id.token}: the job was not started")
        job: str = self.handle["job"]
        return job


class WarehouseStatement(ExternalWork):
    """A step whose outside work is one warehouse statement (Redshift: an UNLOAD, or the export's
    DELETE + COPY batch), known by its statement id; the embedded warehouse runs it in-process.

    Subclasses start it (:meth:`submit`, which records the id) and say what it does
    (:attr:`what`, for messages) and how the step ends (:meth:`finish`)."""

    #: What the statement does, for messages: "UNLOAD into <prefix>", "replace <table> ds=<day>".
    what: str = "statement"
    #: The run-state name its warehouse seconds are kept under for the run's cost line
    #: (:mod:`mlbatch.reporting.costs` sums ``statement__<dag kind>*``), e.g. ``statement__score_export``.
    cost_name: str = ""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self._started = time.monotonic()  # the embedded warehouse works inside start()

    def submit(self, statement_id: str | None) -> dict[str, Any] | None:
        """Record a started statement; an embedded warehouse (no id) has already done the work."""
        if statement_id is None:
            self.record_seconds(time.monotonic() - self._started)
            return self.finish()
        self.handle = {"statement_id": statement_id}
        return None

    def record_seconds(self, seconds: float | None) -> None:
        """Keep the statement's warehouse seconds for the run's cost line (a rerun replaces them)."""
        if seconds is not None and self.cost_name:
            self.ctx.save_state(self.cost_name, {"seconds": round(seconds, 3), "what": self.what})

    def record_statement_seconds(self, statement_id: str | None) -> None:
        """After a warehouse statement ended: its own duration, as the warehouse reports it."""
        if statement_id is not None:
            self.record_seconds(self.ctx.env.warehouse.statement_seconds(statement_id))

    def reattach(self, handle: dict[str, Any]) -> bool:
        """An earlier attempt's statement still running (its worker died): wait for it instead of
        clearing its output under it and submitting a second one."""
        if handle.get("statement_id") and self.ctx.env.warehouse.is_running(handle["statement_id"]):
            self.handle = handle
            return True
        return False

    def wait(self) -> None:
        self.ctx.env.warehouse.wait(self.statement_id(), self.what)

    def trigger(self) -> Any | None:
        return self.ctx.env.warehouse.trigger(self.statement_id())

    def check(self, event: dict[str, Any] | None) -> str | None:
        """Raise if the deferred wait reported a failure; the statement id (None: embedded)."""
        self.ctx.env.warehouse.check_event(event, self.what)
        return (self.handle or {}).get("statement_id")

    def stop(self) -> None:
        if self.handle is not None:
            self.ctx.env.warehouse.cancel(self.handle["statement_id"])

    def statement_id(self) -> str:
        if self.handle is None:
            raise RuntimeError(f"{self.what}: the statement was not started")
        statement_id: str = self.handle["statement_id"]
        return statement_id
