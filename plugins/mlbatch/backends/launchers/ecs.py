"""Run a job as an ECS task (production): RunTask on a GPU capacity provider, logs from CloudWatch.

Clients come from the amazon provider's hooks (``EcsHook``, ``AwsLogsHook``) for the Airflow
connection ``MLBATCH_AWS_CONN_ID``, so credentials are the connection's (or the worker's role).
Tests give the connection the endpoint of the ECS double (devtools/devservers/ecs_double.py), so
the same clients, waiters and trigger talk HTTP to real containers.

The contract, for ECS:

- success marker present: nothing runs (checked by :meth:`Launcher.run`);
- ``list_tasks(startedBy=<JobId.token>, desiredStatus=RUNNING)`` finds a task of this job (pending
  or running): reattach, i.e. wait on it and tail its log;
- otherwise ``run_task`` with ``startedBy=<token>``, the job's command as a container override,
  ``resourceRequirements`` GPU when the job asks for one, cpu/memory overrides, tags naming the
  Airflow task. Unlike the provider's ``EcsRunTaskOperator`` reattach, a retry after success does
  not launch again: the marker is checked first.

A task is done when ECS says STOPPED; the job succeeded only if its container exited 0 *and* the
marker is there. ``kill()`` stops the task. The environment override carries no credentials:
:func:`refuse_secrets` rejects any such name before the request is sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

from mlbatch.backends.deploy_checks import family_base, job_task_definition_family
from mlbatch.backends.launchers.base import (
    LOG_TAIL_LINES,
    JobFailed,
    JobRequest,
    JobResult,
    Launcher,
    refuse_secrets,
    tail_buffer,
)
from mlbatch.backends.launchers.ecs_trigger import EcsJobDoneTrigger
from mlbatch.backends.store import ObjectStore

if TYPE_CHECKING:
    from mlbatch.backends.launchers.ecs_trigger import EcsJobDoneTrigger

log = logging.getLogger(__name__)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds from ``name``, else ``default``; ValueError naming the variable."""
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number of seconds (unset: {default:g})")
    return value


@dataclass(frozen=True)
class EcsConfig:
    cluster: str
    train_task_definition: str
    score_task_definition: str
    container_name: str = "job"  # the container in both task definitions that runs `python3 -m`
    gpu_capacity_provider: str | None = None  # for jobs with gpu > 0
    cpu_capacity_provider: str | None = None  # for the others; None: the cluster's default strategy
    subnets: tuple[str, ...] = ()  # awsvpc network mode; empty: the task definition's network mode decides
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    aws_conn_id: str = "aws_default"
    region: str | None = None
    log_group: str | None = None  # default: the task definition's awslogs-group
    log_stream_prefix: str | None = None  # default: the task definition's awslogs-stream-prefix
    poll_s: float = 5.0
    max_poll_s: float = 60.0  # backoff ceiling while waiting on a long job
    # Deferred waits (the triggerer): the tasks_stopped waiter every trigger_poll_s seconds, for at
    # most trigger_max_attempts polls (30 s x 1,440 = 12 h; the task's execution_timeout ends it sooner).
    trigger_poll_s: float = 30.0
    trigger_max_attempts: int = 1440

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> EcsConfig:
        e = os.environ if environ is None else environ
        missing = [
            n
            for n in ("MLBATCH_ECS_CLUSTER", "MLBATCH_ECS_TRAIN_TASK_DEFINITION", "MLBATCH_ECS_SCORE_TASK_DEFINITION")
            if not e.get(n)
        ]
        if missing:
            raise ValueError(f"MLBATCH_LAUNCHER=ecs needs {missing} set (see mlbatch.backends.env)")
        return cls(
            cluster=e["MLBATCH_ECS_CLUSTER"],
            train_task_definition=e["MLBATCH_ECS_TRAIN_TASK_DEFINITION"],
            score_task_definition=e["MLBATCH_ECS_SCORE_TASK_DEFINITION"],
            container_name=e.get("MLBATCH_ECS_CONTAINER") or cls.container_name,
            gpu_capacity_provider=e.get("MLBATCH_ECS_GPU_CAPACITY_PROVIDER") or None,
            cpu_capacity_provider=e.get("MLBATCH_ECS_CPU_CAPACITY_PROVIDER") or None,
            subnets=_split(e.get("MLBATCH_ECS_SUBNETS")),
            security_groups=_split(e.get("MLBATCH_ECS_SECURITY_GROUPS")),
            assign_public_ip=e.get("MLBATCH_ECS_ASSIGN_PUBLIC_IP", "").lower() in ("1", "true", "yes"),
            aws_conn_id=e.get("MLBATCH_AWS_CONN_ID") or cls.aws_conn_id,
            region=e.get("MLBATCH_AWS_REGION") or None,
            log_group=e.get("MLBATCH_ECS_LOG_GROUP") or None,
            log_stream_prefix=e.get("MLBATCH_ECS_LOG_STREAM_PREFIX") or None,
            # Test stacks poll in seconds; production keeps the defaults.
            poll_s=_seconds(e, "MLBATCH_ECS_POLL_S", cls.poll_s),
            trigger_poll_s=_seconds(e, "MLBATCH_ECS_TRIGGER_POLL_S", cls.trigger_poll_s),
        )

    def task_definition_for(self, module: str) -> str:
        """The configured task definition of a job kind: its family is the BASE of each model's."""
        return self.train_task_definition if module == "jobs.train" else self.score_task_definition

    def capacity_provider_for(self, request: JobRequest) -> str | None:
        return self.gpu_capacity_provider if request.gpu > 0 else self.cpu_capacity_provider

    def family_for(self, request: JobRequest) -> str:
        """The task-definition family RunTask names: ``<base>-<model>-<ec2|fargate>``, one per
        model and compatibility (as ``mlbatch ecs task-definitions`` registers them), so that a
        model's size and ``requiresCompatibilities`` never follow another model's registration.
        The family's latest ACTIVE revision runs."""
        base = family_base(self.task_definition_for(request.module))
        model = request.model or request.job_id.dag_id.split("__", 1)[0]
        return job_task_definition_family(base, model, self.capacity_provider_for(request))


class EcsLauncher(Launcher):
    def __init__(
        self,
        store: ObjectStore,
        config: EcsConfig,
        ecs_client: Any = None,  # boto3 clients (no stubs pinned)
        logs_client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(store)
        self.config = config
        self._ecs = ecs_client
        self._logs = logs_client
        self._sleep = sleep
        self._log_config: dict[str, tuple[str | None, str | None]] = {}

    @property
    def ecs(self) -> Any:
        if self._ecs is None:
            self._ecs = EcsHook(aws_conn_id=self.config.aws_conn_id, region_name=self.config.region).conn
        return self._ecs

    @property
    def logs(self) -> Any:
        if self._logs is None:
            self._logs = AwsLogsHook(aws_conn_id=self.config.aws_conn_id, region_name=self.config.region).conn
        return self._logs

    # -- launch -----------------------------------------------------------------------------

    def _reattach_or_launch(self, request: JobRequest) -> str:
        arn = self._running_task(request)
        if arn:
            log.info("reattaching to ECS task %s (startedBy=%s)", arn, request.job_id.token)
            return arn
        return self._run_task(request)

    def _running_task(self, request: JobRequest) -> str | None:
        arns = self.ecs.list_tasks(
            cluster=self.config.cluster, startedBy=request.job_id.token, desiredStatus="RUNNING"
        ).get("taskArns", [])
        if len(arns) > 1:
            log.warning("%d running ECS tasks started by %s; waiting on %s", len(arns), request.job_id.token, arns[0])
        return arns[0] if arns else None

    def run_task_kwargs(self, request: JobRequest) -> dict[str, Any]:
        """The ``run_task`` request for a job (public for tests and `--dry-run` style checks)."""
        cfg, jid = self.config, request.job_id
        refuse_secrets(request, request.env)
        cpu_units, memory_mib = int(request.vcpu * 1024), int(request.memory_gib * 1024)
        container: dict[str, Any] = {
            "name": cfg.container_name,
            "command": [request.module, *request.args],
            "environment": [{"name": k, "value": v} for k, v in sorted(request.environment().items())],
            "cpu": cpu_units,
            "memory": memory_mib,
        }
        if request.gpu > 0:
            container["resourceRequirements"] = [{"type": "GPU", "value": str(request.gpu)}]
        kwargs: dict[str, Any] = {
            "cluster": cfg.cluster,
            "taskDefinition": cfg.family_for(request),
            "count": 1,
            "startedBy": jid.token,
            "overrides": {"containerOverrides": [container], "cpu": str(cpu_units), "memory": str(memory_mib)},
            "tags": [
                {"key": "mlbatch:dag_id", "value": jid.dag_id},
                {"key": "mlbatch:task_id", "value": jid.task_id},
                {"key": "mlbatch:run_id", "value": jid.run_id},
                {"key": "mlbatch:map_index", "value": str(jid.map_index)},
            ],
            "enableECSManagedTags": True,
            "propagateTags": "TASK_DEFINITION",
        }
        provider = cfg.capacity_provider_for(request)
        if provider:
            kwargs["capacityProviderStrategy"] = [{"capacityProvider": provider, "weight": 1, "base": 0}]
        if cfg.subnets:
            vpc: dict[str, Any] = {
                "subnets": list(cfg.subnets),
                "assignPublicIp": "ENABLED" if cfg.assign_public_ip else "DISABLED",
            }
            if cfg.security_groups:
                vpc["securityGroups"] = list(cfg.security_groups)
            kwargs["networkConfiguration"] = {"awsvpcConfiguration": vpc}
        return kwargs

    def _run_task(self, request: JobRequest) -> str:
        kwargs = self.run_task_kwargs(request)
        log.info(
            "launching %s as ECS task (cluster %s, task definition %s, startedBy %s, gpu %s)",
            request.module,
            kwargs["cluster"],
            kwargs["taskDefinition"],
            kwargs["startedBy"],
            request.gpu,
        )
        response = self.ecs.run_task(**kwargs)
        tasks, failures = response.get("tasks", []), response.get("failures", [])
        if not tasks:
            reasons = "; ".join(
                f"{f.get('arn', '?')}: {f.get('reason')} {f.get('detail', '')}".strip() for f in failures
            )
            raise JobFailed(request, f"ECS RunTask started no task: {reasons or 'no reason given'}", [])
        arn: str = tasks[0]["taskArn"]
        return arn

    # -- wait -------------------------------------------------------------------------------

    def wait(self, request: JobRequest, handle: str) -> JobResult:
        """Poll DescribeTasks (backoff from ``poll_s`` to ``max_poll_s``) until STOPPED, tailing its log."""
        tail = tail_buffer()
        cursor: dict[str, str | None] = {"token": None}
        delay = self.config.poll_s
        while True:
            task = self._describe(request, handle)
            self._pull_logs(request, task, cursor, tail)
            if task.get("lastStatus") == "STOPPED":
                break
            self._sleep(delay)
            delay = min(delay * 1.5, self.config.max_poll_s)
        self._pull_logs(request, task, cursor, tail)  # what was written between the last poll and the stop
        self._current = None
        return self._outcome(request, task, list(tail))

    def _outcome(self, request: JobRequest, task: dict[str, Any], tail: list[str]) -> JobResult:
        arn = task["taskArn"]
        containers: list[dict[str, Any]] = task.get("containers", [])
        container = next((c for c in containers if c.get("name") == self.config.container_name), {})
        code = container.get("exitCode")
        if code != 0:
            why = task.get("stoppedReason") or container.get("reason") or "no reason given"
            if task.get("stopCode"):  # e.g. TaskFailedToStart: the image or the log group is wrong, not the job
                why = f"{task['stopCode']}: {why}"
            ending = f"container exit code {code}" if code is not None else "the container has no exit code (never ran)"
            raise JobFailed(request, f"ECS task {arn} stopped ({why}); {ending}", tail)
        if not self._marker_exists(request):
            raise JobFailed(request, f"ECS task {arn} exited 0 but wrote no marker {request.success_uri}", tail)
        return JobResult(request.job_id, reused=False, log_tail=tail)

    # -- deferred waiting (the triggerer) -------------------------------------------------------

    def trigger(self, request: JobRequest, handle: str) -> EcsJobDoneTrigger:
        """The provider's ``TaskDoneTrigger`` (the ``tasks_stopped`` waiter, CloudWatch lines into
        the task log), extended with ``on_kill``: StopTask when a person stops the deferred task."""

        task = self._describe(request, handle)
        group, prefix = self._log_location(task.get("taskDefinitionArn", self.config.family_for(request)))
        stream = f"{prefix}/{self.config.container_name}/{handle.rsplit('/', 1)[-1]}" if group and prefix else None
        return EcsJobDoneTrigger(
            cluster=self.config.cluster,
            task_arn=handle,
            # Whole seconds (the provider's int()); 0 would poll DescribeTasks without a pause.
            waiter_delay=max(1, round(self.config.trigger_poll_s)),
            waiter_max_attempts=self.config.trigger_max_attempts,
            aws_conn_id=self.config.aws_conn_id,
            region_name=self.config.region,
            log_group=group if stream else None,
            log_stream=stream,
            stop_reason=stop_reason(request),
        )

    def result(self, request: JobRequest, handle: str, event: dict[str, Any] | None) -> JobResult:
        """After the trigger fired: the stopped task's exit code, marker and last log lines."""
        if event is not None and event.get("status") not in (None, "success"):
            raise JobFailed(request, f"waiting for ECS task {handle} failed: {event}", [])
        task = self._describe(request, handle)
        if task.get("lastStatus") != "STOPPED":
            raise JobFailed(request, f"ECS task {handle} is {task.get('lastStatus')} after its trigger fired", [])
        return self._outcome(request, task, self._last_log_lines(request, task))

    def _last_log_lines(self, request: JobRequest, task: dict[str, Any]) -> list[str]:
        group, prefix = self._log_location(task.get("taskDefinitionArn", self.config.family_for(request)))
        if not group or not prefix:
            return []
        stream = f"{prefix}/{self.config.container_name}/{task['taskArn'].rsplit('/', 1)[-1]}"
        try:
            page = self.logs.get_log_events(
                logGroupName=group, logStreamName=stream, startFromHead=False, limit=LOG_TAIL_LINES
            )
        except self.logs.exceptions.ResourceNotFoundException:
            return []
        return [e.get("message", "").rstrip("\n") for e in page.get("events", [])]

    def _describe(self, request: JobRequest, arn: str) -> dict[str, Any]:
        response = self.ecs.describe_tasks(cluster=self.config.cluster, tasks=[arn])
        if not response.get("tasks"):
            failures = response.get("failures") or [{"reason": "not returned"}]
            raise JobFailed(request, f"ECS task {arn} cannot be described: {failures[0].get('reason')}", [])
        task: dict[str, Any] = response["tasks"][0]  # DescribeTasks' Task (JSON)
        return task

    def _log_location(self, task_definition_arn: str) -> tuple[str | None, str | None]:
        """(awslogs group, stream prefix): the config's, else the task definition's log configuration."""
        if self.config.log_group:
            return self.config.log_group, self.config.log_stream_prefix
        if task_definition_arn not in self._log_config:
            group = prefix = None
            td = self.ecs.describe_task_definition(taskDefinition=task_definition_arn)["taskDefinition"]
            for c in td.get("containerDefinitions", []):
                if c.get("name") == self.config.container_name:
                    opts = (c.get("logConfiguration") or {}).get("options", {})
                    group, prefix = opts.get("awslogs-group"), opts.get("awslogs-stream-prefix")
            self._log_config[task_definition_arn] = (group, self.config.log_stream_prefix or prefix)
        return self._log_config[task_definition_arn]

    def _pull_logs(
        self, request: JobRequest, task: dict[str, Any], cursor: dict[str, str | None], tail: deque[str]
    ) -> None:
        """Append the task's new CloudWatch lines to the task log and the tail buffer."""
        group, prefix = self._log_location(task.get("taskDefinitionArn", self.config.family_for(request)))
        if not group or not prefix:
            return
        stream = f"{prefix}/{self.config.container_name}/{task['taskArn'].rsplit('/', 1)[-1]}"
        try:
            while True:
                args = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
                if cursor["token"]:
                    args["nextToken"] = cursor["token"]
                page = self.logs.get_log_events(**args)
                for event in page.get("events", []):
                    line = event.get("message", "").rstrip("\n")
                    tail.append(line)
                    log.info("[%s] %s", request.module, line)
                if page.get("nextForwardToken") in (None, cursor["token"]):
                    return
                cursor["token"] = page["nextForwardToken"]
        except self.logs.exceptions.ResourceNotFoundException:
            return  # the stream appears when the container starts writing

    def stop(self, request: JobRequest, handle: str) -> None:
        """StopTask: ECS sends SIGTERM to the container, SIGKILL after its stopTimeout. Returns at once."""
        log.info("stopping ECS task %s", handle)
        self.ecs.stop_task(cluster=self.config.cluster, task=handle, reason=stop_reason(request))


def stop_reason(request: JobRequest) -> str:
    """StopTask's reason (at most 255 characters): which Airflow task stopped the job, and why."""
    jid = request.job_id
    shard = f"[{jid.map_index}]" if jid.map_index >= 0 else ""
    return f"mlbatch: Airflow task {jid.dag_id}.{jid.task_id}{shard} of run {jid.run_id} was stopped (on_kill)"[:255]
