"""The base of mlbatch's own errors, and the ``mlbatch`` exit code each kind of error means.

An error's class says what went wrong for whoever reads the exit code: a gate blocked (1), the
input was wrong (2: a spec, an option, a file, a name; fixing the input fixes the run), or
something failed for another reason (3: a job crashed, a server is down; retrying may help).
The CLI maps any :class:`MlbatchError` to its ``exit_code`` in one place (``mlbatch.cli.app``), so a
command raises and never picks a number itself.

Each project error also keeps the builtin base it always had (``SpecError`` is still a
``ValueError``), so code that catches the builtin keeps working. This module imports nothing: the
spec, the gates and the DAG factory import it at DAG-parse time, and every layer may import it.
"""

from __future__ import annotations

EXIT_GATE, EXIT_USAGE, EXIT_FAILED = 1, 2, 3


class MlbatchError(Exception):
    """Any error of mlbatch's own; ``exit_code`` is the ``mlbatch`` command's exit status for it."""

    # 3 unless a subclass says otherwise: an error nobody classified is no user's mistake.
    exit_code: int = EXIT_FAILED


class UsageError(MlbatchError):
    """The input is wrong (a spec, an option, a file, a model name): fixing it fixes the run."""

    exit_code: int = EXIT_USAGE


class StageFailed(MlbatchError):
    """Work failed for a reason other than the input or a gate: a job, a server, a store."""

    exit_code: int = EXIT_FAILED


class StepFailed(MlbatchError):
    """A step of a run raised ``cause``; the CLI reports it under the step's name.

    The exit code is the cause's, so a gate that blocked in a step still exits 1 and a bad
    template found by a step still exits 2; anything else a step raises exits 3.
    """

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        self.exit_code = exit_code_of(cause)  # per instance, not per class: the cause decides
        super().__init__(f"{step}: {cause}")


def exit_code_of(exc: BaseException) -> int:
    """The exit code ``exc`` means: its own for an mlbatch error, else 3 (an unexpected failure)."""
    return exc.exit_code if isinstance(exc, MlbatchError) else EXIT_FAILED
