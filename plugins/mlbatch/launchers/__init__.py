"""Job launchers: run a ``jobs/`` entrypoint somewhere and wait for it.

One interface (:class:`~mlbatch.launchers.base.Launcher`), several backends: a local process
(embedded stack), Docker (tests, development), ECS RunTask (production).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbatch.launchers.base import JobFailed, JobId, JobRequest, JobResult, Launcher

if TYPE_CHECKING:
    from mlbatch.env import Environment

__all__ = ["JobFailed", "JobId", "JobRequest", "JobResult", "Launcher", "get_launcher"]


KINDS = ("local", "docker", "ecs")


def get_launcher(kind: str, env: Environment) -> Launcher:
    """The launcher named by ``MLBATCH_LAUNCHER``; its settings come from the environment (see mlbatch.env)."""
    if kind == "local":
        from mlbatch.launchers.local import LocalProcessLauncher

        return LocalProcessLauncher(env.store, env.home / "jobs")
    if kind == "docker":
        from mlbatch.launchers.docker import DockerConfig, DockerLauncher

        return DockerLauncher(env.store, DockerConfig.from_env())
    if kind == "ecs":
        from mlbatch.launchers.ecs import EcsConfig, EcsLauncher

        return EcsLauncher(env.store, EcsConfig.from_env())
    raise ValueError(f"MLBATCH_LAUNCHER={kind!r} is not one of: {', '.join(KINDS)}")
