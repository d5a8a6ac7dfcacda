"""Job launchers: run a ``jobs/`` entrypoint somewhere and wait for it.

One interface (:class:`~mlbatch.backends.launchers.base.Launcher`), several backends: a local process
(embedded stack), Docker (tests, development), ECS RunTask (production). :data:`LAUNCHERS` maps
each ``MLBATCH_LAUNCHER`` value to the factory of its backend; :func:`get_launcher` looks it up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlbatch.backends.launchers.base import JobFailed, JobId, JobRequest, JobResult, Launcher

if TYPE_CHECKING:
    from pathlib import Path

    from mlbatch.backends.store import ObjectStore

__all__ = ["LAUNCHERS", "JobFailed", "JobId", "JobRequest", "JobResult", "Launcher", "get_launcher"]


# Each factory imports its backend when it is chosen: the Docker SDK and the amazon provider's
# ECS hooks are heavy, and a worker only ever needs the one MLBATCH_LAUNCHER names.
def _local(store: ObjectStore, home: Path) -> Launcher:
    # Chosen at run time: only the launcher MLBATCH_LAUNCHER names loads (with its SDK).
    from mlbatch.backends.launchers.local import LocalProcessLauncher

    return LocalProcessLauncher(store, home / "jobs")


def _docker(store: ObjectStore, home: Path) -> Launcher:
    # Chosen at run time: only the launcher MLBATCH_LAUNCHER names loads (with its SDK).
    from mlbatch.backends.launchers.docker import DockerConfig, DockerLauncher

    return DockerLauncher(store, DockerConfig.from_env())


def _ecs(store: ObjectStore, home: Path) -> Launcher:
    # Chosen at run time: only the launcher MLBATCH_LAUNCHER names loads (with its SDK).
    from mlbatch.backends.launchers.ecs import EcsConfig, EcsLauncher

    return EcsLauncher(store, EcsConfig.from_env())


# MLBATCH_LAUNCHER -> the backend's factory, given the object store and MLBATCH_HOME (its settings
# come from the environment: see mlbatch.backends.env).
LAUNCHERS: dict[str, Callable[[ObjectStore, Path], Launcher]] = {"local": _local, "docker": _docker, "ecs": _ecs}
KINDS = tuple(LAUNCHERS)


def get_launcher(kind: str, store: ObjectStore, home: Path) -> Launcher:
    """The launcher named by ``MLBATCH_LAUNCHER``; its settings come from the environment (see mlbatch.backends.env)."""
    factory = LAUNCHERS.get(kind)
    if factory is None:
        raise ValueError(f"MLBATCH_LAUNCHER={kind!r} is not one of: {', '.join(LAUNCHERS)}")
    return factory(store, home)
