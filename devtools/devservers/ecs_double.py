"""ECS at the HTTP wire: each task a real Docker container, its output in CloudWatch Logs (moto).

Served by an :class:`~devtools.devservers.aws_wire.AwsEndpoint` (requests validated against
botocore's ECS model there). What it answers, as ECS does:

- RegisterTaskDefinition / DescribeTaskDefinition: families and revisions (``family``,
  ``family:rev`` and ARNs); one container per task definition (what mlbatch registers);
- RunTask: checks what ECS checks before it places a task (cluster, container override names,
  ``launchType`` with ``capacityProviderStrategy``, ``networkConfiguration`` against the network
  mode), answers placement ``failures`` (``RESOURCE:CPU|MEMORY|GPU``) when the host cannot hold
  the task, else returns it PROVISIONING and starts its container in a thread. An image that is not
  there (or a log group that is missing) is, as on ECS, a task that stops with stopCode
  ``TaskFailedToStart`` and a ``CannotPullContainerError`` (``ResourceInitializationError``) reason;
- DescribeTasks: RUNNING while the container runs; STOPPED once it has exited *and* its output is
  in CloudWatch, with ``containers[].exitCode``, ``stoppedReason`` ("Essential container in task
  exited" or StopTask's reason) and ``stopCode``; MISSING in ``failures`` for unknown tasks;
- ListTasks (cluster, family, startedBy, desiredStatus: RUNNING by default);
- StopTask: desiredStatus STOPPED at once, then ``docker stop`` with the container definition's
  ``stopTimeout`` (ECS's default 30 s; a test registers a shorter one).

Stand-ins: the task role is :attr:`task_environment` (endpoint and test keys added to every
container: the jobs reach S3 on the same endpoint); every task uses the host network, whatever the
task definition says, so 127.0.0.1 in the container is the endpoint's; the container instance is
this Docker host (its CPUs and memory; ``gpus`` says how many GPUs it has, 0 by default): a task
larger than the host fails placement, tasks that fit run side by side (no queueing for capacity).
Containers carry the ECS agent's labels (``com.amazonaws.ecs.task-arn``, ...) and
``io.mlbatch.ecs-double.started-by``; stopped ones are removed once their output is drained.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devtools.devservers._base import free_port
from devtools.devservers.aws_wire import AwsEndpoint, AwsError, JsonService, aws_environment
from devtools.devservers.ecs_logs import AwsLogsPump, LogSetupError, awslogs_target
from devtools.devservers.ecs_task import Task

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger(__name__)

LABEL_TASK_ARN = "com.amazonaws.ecs.task-arn"  # the ECS agent's own label
LABEL_OWNER = "io.mlbatch.ecs-double.owner"  # which double started it: close() removes its own
LOG_DRAIN_S = 30  # after the container exits, the most its log stream may take to end


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterException", message)


class EcsDouble(JsonService):
    """ECS's task API over a Docker daemon; see the module's documentation for what it answers."""

    service_name = "ecs"

    def __init__(
        self,
        docker_client: DockerClient,
        *,
        endpoint_url: str,
        clusters: Iterable[str] = ("default",),
        region: str = "us-east-1",
        account: str = "123456789012",
        task_environment: dict[str, str] | None = None,
        gpus: int = 0,
    ):
        """``endpoint_url``: the :class:`AwsEndpoint` this double is served from (its CloudWatch
        Logs, and the jobs' S3 through :attr:`task_environment`, which defaults to its test keys)."""
        super().__init__()
        self.docker = docker_client
        self.endpoint_url, self.region, self.account = endpoint_url, region, account
        self.clusters = set(clusters)
        self.task_environment = dict(task_environment or aws_environment(endpoint_url, region))
        info = docker_client.info()
        self.capacity = {"CPU": info["NCPU"] * 1024, "MEMORY": info["MemTotal"] // 2**20, "GPU": gpus}
        self.owner = secrets.token_hex(6)
        self.definitions: dict[str, list[dict[str, Any]]] = {}  # family -> revisions, 1 first
        self.tasks: dict[str, Task] = {}  # by ARN
        self._logs: Any = None

    # -- task definitions ------------------------------------------------------------------------

    def register_task_definition(self, **params: Any) -> dict[str, Any]:
        family, containers = params["family"], params["containerDefinitions"]
        if len(containers) != 1:
            raise AwsError(
                "ClientException", f"the ECS double runs one container per task; {family} has {len(containers)}"
            )
        with self._lock:  # two registrations of a family at once get distinct revisions
            revisions = self.definitions.setdefault(family, [])
            revision = len(revisions) + 1
            definition = {
                **{k: v for k, v in params.items() if k != "tags"},
                "taskDefinitionArn": f"arn:aws:ecs:{self.region}:{self.account}:task-definition/{family}:{revision}",
                "revision": revision,
                "status": "ACTIVE",
                "registeredAt": datetime.now(UTC),
            }
            revisions.append(definition)
        return {"taskDefinition": definition, "tags": params.get("tags", [])}

    def describe_task_definition(self, taskDefinition: str, **_: Any) -> dict[str, Any]:
        return {"taskDefinition": self._definition(taskDefinition), "tags": []}

    def _definition(self, name: str) -> dict[str, Any]:
        """``family`` (its latest revision), ``family:revision`` or the task definition's ARN."""
        family, _, revision = name.rsplit("/", 1)[-1].partition(":")
        revisions = self.definitions.get(family, [])
        try:
            return revisions[int(revision) - 1] if revision else revisions[-1]
        except (IndexError, ValueError):
            raise AwsError("ClientException", "Unable to describe task definition.") from None

    # -- tasks -----------------------------------------------------------------------------------

    def run_task(self, taskDefinition: str, cluster: str = "default", count: int = 1, **params: Any) -> dict[str, Any]:
        self._cluster(cluster)
        definition = self._definition(taskDefinition)
        self._check_run_request(definition, params)
        task = Task.create(self, cluster, definition, params)
        short = [need for need, amount in task.needs().items() if amount > self.capacity[need]]
        if short:
            instance = f"arn:aws:ecs:{self.region}:{self.account}:container-instance/{cluster}/{self.owner}"
            return {"tasks": [], "failures": [{"arn": instance, "reason": f"RESOURCE:{short[0]}"}] * count}
        tasks = [task] + [Task.create(self, cluster, definition, params) for _ in range(count - 1)]
        for t in tasks:
            with self._lock:
                self.tasks[t.arn] = t
            threading.Thread(target=self._lifecycle, args=(t,), name=f"ecs-task:{t.id[:8]}", daemon=True).start()
        return {"tasks": [t.describe() for t in tasks], "failures": []}

    def _check_run_request(self, definition: dict[str, Any], params: dict[str, Any]) -> None:
        """What ECS rejects before it places anything (InvalidParameterException)."""
        if params.get("launchType") and params.get("capacityProviderStrategy"):
            raise _invalid("Specifying both a launch type and capacity provider strategy is not supported.")
        awsvpc = definition.get("networkMode") == "awsvpc"
        if awsvpc and not params.get("networkConfiguration"):
            raise _invalid("Network Configuration must be provided when networkMode 'awsvpc' is specified.")
        if not awsvpc and params.get("networkConfiguration"):
            raise _invalid("Network Configuration is not valid for the given networkMode of this task definition.")
        names = {c["name"] for c in definition["containerDefinitions"]}
        for override in (params.get("overrides") or {}).get("containerOverrides", []):
            if override.get("name") not in names:
                raise _invalid(
                    f"Override for container named {override.get('name')} is not a container in the TaskDefinition."
                )

    def describe_tasks(self, tasks: list[str], cluster: str = "default", **_: Any) -> dict[str, Any]:
        self._cluster(cluster)
        found, failures = [], []
        for ref in tasks:
            task = self._task(cluster, ref)
            if task is None:
                failures.append({"arn": ref, "reason": "MISSING"})
            else:
                found.append(task.describe())
        return {"tasks": found, "failures": failures}

    def list_tasks(self, cluster: str = "default", desiredStatus: str = "RUNNING", **params: Any) -> dict[str, Any]:
        self._cluster(cluster)
        with self._lock:
            tasks = [t for t in self.tasks.values() if t.cluster == cluster and t.desired_status == desiredStatus]
        if params.get("startedBy"):
            tasks = [t for t in tasks if t.started_by == params["startedBy"]]
        if params.get("family"):
            tasks = [t for t in tasks if t.definition["family"] == params["family"]]
        return {"taskArns": [t.arn for t in tasks]}

    def stop_task(self, task: str, cluster: str = "default", reason: str = "", **_: Any) -> dict[str, Any]:
        self._cluster(cluster)
        found = self._task(cluster, task)
        if found is None:
            raise _invalid("The referenced task was not found.")
        running = found.request_stop(reason or "Task stopped by user")
        if running is not None:
            # docker stop waits up to stopTimeout: StopTask itself answers at once, as on ECS.
            threading.Thread(target=self._stop_container, args=(found, running), daemon=True).start()
        return {"task": found.describe()}

    def _cluster(self, cluster: str) -> None:
        if cluster.rsplit("/", 1)[-1] not in self.clusters:
            raise AwsError(
                "ClusterNotFoundException", f"Cluster not found: {cluster} (the double has {sorted(self.clusters)})"
            )

    def _task(self, cluster: str, ref: str) -> Task | None:
        """A task by ARN or id, in ``cluster``."""
        with self._lock:
            task = self.tasks.get(ref) or next((t for t in self.tasks.values() if t.id == ref), None)
        return task if task is not None and task.cluster == cluster.rsplit("/", 1)[-1] else None

    # -- the container behind a task ---------------------------------------------------------------

    def _lifecycle(self, task: Task) -> None:
        """PROVISIONING -> PENDING -> RUNNING -> STOPPED, in the task's own thread. Every path ends
        STOPPED: a task that never does would hold its waiter (and the test) for ever."""
        from docker.errors import ImageNotFound

        try:
            self.docker.images.get(task.image)
            self._run_container(task, self._log_pump(task))
        except ImageNotFound:  # not there, or removed between the check and the create
            task.failed_to_start(
                "CannotPullContainerError",
                f"pull image manifest has been retried 1 time(s): {task.image}: not found",
            )
        except LogSetupError as exc:
            task.failed_to_start("ResourceInitializationError", str(exc))
        except Exception as exc:  # noqa: BLE001 - a Docker or CloudWatch failure is the task's, as on ECS
            log.exception("ECS double: task %s failed", task.arn)
            task.failed_to_start("CannotStartContainerError", f"{type(exc).__name__}: {exc}")

    def _run_container(self, task: Task, pump: AwsLogsPump | None) -> None:
        from docker.errors import APIError

        task.set_status("PENDING")
        container = self.docker.containers.create(**task.container_kwargs(self.task_environment))
        if not task.container_started(container.id):  # StopTask came first
            container.remove(force=True)
            return
        try:
            container.start()
        except APIError as exc:
            container.remove(force=True)
            task.failed_to_start("CannotStartContainerError", str(exc))
            return
        task.set_status("RUNNING")
        if task.desired_status == "STOPPED":  # StopTask between create and start: it saw no container to stop
            self._stop_container(task, container.id)
        pumping = None
        if pump is not None:
            chunks = container.logs(stream=True, follow=True, stdout=True, stderr=True)
            pumping = threading.Thread(target=pump.pump, args=(chunks,), name=f"ecs-logs:{task.id[:8]}", daemon=True)
            pumping.start()
        try:
            code, why = container.wait().get("StatusCode"), None
        except APIError as exc:  # removed behind the double's back (docker rm -f)
            code, why = None, f"the container is gone: {exc}"
        if pumping is not None:
            # Docker ends a followed log stream when the container exits; a daemon under load may not,
            # and the task must still stop: its lines so far are in CloudWatch, the rest is reported.
            pumping.join(timeout=LOG_DRAIN_S)
            if pumping.is_alive():
                log.warning("ECS double: the log stream of task %s did not end in %d s", task.arn, LOG_DRAIN_S)
        task.exited(code, why)
        with contextlib.suppress(APIError):
            container.remove(force=True)

    def _log_pump(self, task: Task) -> AwsLogsPump | None:
        target = awslogs_target(task.container_definition, task.id, self.region)
        if target is None:
            return None
        region, group, stream, create = target
        return AwsLogsPump(self._logs_client(region), group, stream).open(create)

    def _logs_client(self, region: str) -> Any:
        if self._logs is None:
            import boto3

            env = self.task_environment
            self._logs = boto3.client(
                "logs",
                endpoint_url=self.endpoint_url,
                region_name=region,
                aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
                aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            )
        return self._logs

    def _stop_container(self, task: Task, container_id: str) -> None:
        from docker.errors import NotFound

        try:
            self.docker.containers.get(container_id).stop(timeout=task.stop_timeout)
        except NotFound:
            pass  # it exited and was removed meanwhile

    def close(self) -> None:
        """Remove every container this double started (running or not)."""
        from docker.errors import NotFound

        try:
            containers = self.docker.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={self.owner}"})
        except Exception:  # noqa: BLE001 - at exit the daemon may be gone already, and its containers with it
            log.warning("ECS double: cannot list its containers to remove them", exc_info=True)
            return
        for container in containers:
            try:
                container.remove(force=True)
            except NotFound:
                pass


def start_ecs_double(
    docker_client: DockerClient,
    *,
    clusters: Iterable[str] = ("default",),
    services: Iterable[JsonService] = (),
    **options: Any,
) -> AwsEndpoint:
    """An :class:`AwsEndpoint`, started, serving an :class:`EcsDouble` (``endpoint["ecs"]``),
    the other doubles in ``services`` and, through moto, S3, STS, IAM and CloudWatch Logs.
    ``options`` go to :class:`EcsDouble` (region, account, task_environment, gpus).

    To compose by hand: pick the port first, since the double must know the endpoint it is served from::

        port = free_port()
        ecs = EcsDouble(client, endpoint_url=f"http://127.0.0.1:{port}", clusters=["ml"])
        endpoint = AwsEndpoint([ecs, other_double], port=port).start()
    """
    port = free_port()
    ecs = EcsDouble(docker_client, endpoint_url=f"http://127.0.0.1:{port}", clusters=clusters, **options)
    return AwsEndpoint([ecs, *services], port=port).start()
