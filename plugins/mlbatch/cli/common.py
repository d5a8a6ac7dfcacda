"""What every ``mlbatch`` command shares: the consoles, the error report and its exit codes,
the spec lookup and logging.

Exit codes: 0 ok; 1 a gate blocked (the message names the check and the numbers);
2 usage or spec error; 3 a stage failed for another reason (a job crashed, a server is down).

A command never picks an exit code for an error: it raises, and :func:`reports_errors` (wrapped
around every registered command by :mod:`mlbatch.cli.app`) prints the error on stderr and exits
with the code its type means (:mod:`mlbatch.errors`); an exception that is no mlbatch error
exits 3 with its type name, and its traceback with ``--verbose``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from rich.traceback import Traceback

from mlbatch.backends.env import Environment
from mlbatch.errors import EXIT_FAILED, EXIT_GATE, MlbatchError, StepFailed, UsageError, exit_code_of
from mlbatch.errors import EXIT_USAGE as EXIT_USAGE  # re-exported: where commands take the codes from
from mlbatch.spec import ModelSpec, find_spec

# Never wrap: paths and values must stay copyable. No markup and no emoji codes: what these
# print is data (error text, spec patterns such as ^[a-z][a-z0-9_]{0,51}$, sheet cells, a
# reason someone typed), which rich would read as style tags and drop, or turn :name: into an
# emoji. Colour comes from Text styles instead; tables printed here are safe for the same reason.
out = Console(soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)

P = ParamSpec("P")
R = TypeVar("R")


def error_text(exc: BaseException) -> Text:
    """What the CLI prints for ``exc``: its text verbatim (a Text, never markup), the label in red."""
    if isinstance(exc, StepFailed):
        if exc.exit_code == EXIT_GATE:  # the gate's message already says which gate blocked
            return Text(f"{exc.step}: {exc.cause}", style="red")
        return Text.assemble((f"{exc.step} failed:", "red"), f" {type(exc.cause).__name__}: {exc.cause}")
    if isinstance(exc, MlbatchError):  # its message was written for the person at the terminal
        return Text.assemble(("error:", "red"), f" {exc}")
    return Text.assemble(("error:", "red"), f" {type(exc).__name__}: {exc}")  # the type says more than the text


def report(exc: BaseException, *, verbose: bool = False) -> int:
    """Print ``exc`` on stderr and return the exit code its type means.

    With ``verbose`` an exit-3 error also gets its traceback: that is the one that may be a bug
    (a gate's numbers or an input error's text say all there is to say).
    """
    code = exit_code_of(exc)
    err.print(error_text(exc))
    if verbose and code == EXIT_FAILED:
        shown = exc.cause if isinstance(exc, StepFailed) else exc
        err.print(Traceback.from_exception(type(shown), shown, shown.__traceback__))
    return code


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """``command``, with any error it raises reported by :func:`report` and exited with its code.

    A ``verbose`` option of the command, where it has one, asks for the traceback.
    """

    @functools.wraps(command)  # typer reads the signature and the annotations through this
    def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # an exit code the command chose, Ctrl-C, a usage error typer prints itself (exit 2)
        except Exception as exc:  # noqa: BLE001 - every other error leaves through the one report
            raise typer.Exit(report(exc, verbose=kwargs.get("verbose") is True)) from None

    # A function attribute (set through __dict__: the wrapper's type declares none): wrapped once;
    # tests check every command is.
    reporting.__dict__["reports_errors"] = True
    return reporting


@contextmanager
def usage_errors(*types: type[Exception]) -> Iterator[None]:
    """Errors of these builtin types raised inside are the user's input: exit 2, with their text.

    For calls that say a plain ``ValueError`` about an argument (a ``--ds`` that is no date, a
    ``--param`` the run does not take); an mlbatch error inside keeps its own exit code.
    """
    try:
        yield
    except MlbatchError:
        raise
    except types as exc:
        raise UsageError(str(exc)) from exc


def run_step(name: str, thunk: Callable[[], R]) -> R:
    """Call one step of a run; whatever it raises is reported under the step's name."""
    try:
        return thunk()
    except Exception as exc:
        raise StepFailed(name, exc) from exc


def load_spec_or_exit(name_or_path: str, env: Environment) -> ModelSpec:
    """The spec SPEC names; a bad one raises SpecError, which the command exits 2 with."""
    return find_spec(name_or_path, env.specs_dir)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
