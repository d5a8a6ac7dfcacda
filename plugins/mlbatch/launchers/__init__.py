"""Job launchers: run a ``jobs/`` entrypoint somewhere and wait for it.

One interface (:class:`~mlbatch.launchers.base.Launcher`), several backends: a local process
(embedded stack), Docker (tests, development), ECS RunTask (production). :data:`LAUNCHERS` maps
each ``MLBATCH_LAUNCHER`` value to the factory of its backend; :func:`get_launcher` looks it up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlbatch.launchers.base import JobFailed, JobId, JobRequest, JobResult, Launcher

if TYPE_CHECKING:
    from mlbatch.env import Environment

__all__ = ["LAUNCHERS", "JobFailed", "JobId", "JobRequest", "JobResult", "Launcher", "get_launcher"]


# Each factory imports its backend when it is chosen: the Docker SDK and the amazon provider's
# ECS hooks are heavy, and a worker only ever needs the one MLBATCH_LAUNCHER names.
def _local(env: Environment) -> Launcher:
    from mlbatch.launchers.local import LocalProcessLauncher

    return LocalProcessLauncher(env.store, env.home / "jobs")


def _docker(env: Environment) -> Launcher:
    from mlbatch.launchers.docker import DockerConfig, DockerLauncher

    return DockerLauncher(env.store, DockerConfig.from_env())


def _ecs(env: Environment) -> Launcher:
    from mlbatch.launchers.ecs import EcsConfig, EcsLauncher

    return EcsLauncher(env.store, EcsConfig.from_env())


# MLBATCH_LAUNCHER -> the backend's factory (its settings come from the environment: see mlbatch.env).
LAUNCHERS: dict[str, Callable[[Environment], Launcher]] = {"local": _local, "docker": _docker, "ecs": _ecs}
KINDS = tuple(LAUNCHERS)


def get_launcher(kind: str, env: Environment) -> Launcher:
    """The launcher named by ``MLBATCH_LAUNCHER``; its settings come from the environment (see mlbatch.env)."""
    factory = LAUNCHERS.get(kind)
    if factory is None:
        raise ValueError(f"MLBATCH_LAUNCHER={kind!r} is not one of: {', '.join(LAUNCHERS)}")
    return factory(env)
