"""The Airflow image, built from docker/airflow.Dockerfile and run as the official Helm chart runs it.

It is built on the debootstrap base with a content-hash tag, then: runs as uid 50000 / gid 0 with
tini as PID 1 and no job or test libraries; `airflow db migrate` against a real PostgreSQL;
every DAG of the repo imports inside the container; and one task (`<model>__labels check_sheet`:
read the label file, check it, stage the labels in S3, log the sync in Aurora) runs inside the
container against MariaDB and moto's S3, with S3 reached through the `aws_default` connection.
All containers use the host's network: the servers listen on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mlbatch.backends.launchers.images import build_image

from devtools.devservers import Postgres, free_port, start_postgres, start_redis
from tests.support.paths import REPO
from tests.support.terminal import say

if TYPE_CHECKING:
    from docker import DockerClient

MODEL = "device_gender"
DS = "2026-11-22"
SPECS = sorted(p.stem for p in (REPO / "dags" / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def airflow_image(base_image: str, docker_client: DockerClient, pytestconfig: pytest.Config) -> str:
    import docker

    img = build_image(docker_client, "airflow", base_image=base_image)
    state = f"built in {img.seconds:.0f} s" if img.built else "cached"
    say(pytestconfig, f"{img.tag}: {state}, {img.size_bytes / 2**20:.0f} MiB")
    for old in docker_client.images.list(name="mlbatch/airflow"):  # earlier code versions: free the disk
        if img.tag not in old.tags:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(old.id, force=False)
    return img.tag


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = start_postgres(tmp_path_factory.mktemp("pg"))
    yield pg
    pg.stop()


def run(
    client: DockerClient,
    image: str,
    command: list[str] | None,
    env: dict[str, str] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
    timeout: float = 600,
) -> tuple[int, str, str]:
    """Run ``command`` in a fresh container (image's entrypoint kept); exit code, stdout, stderr."""
    container = client.containers.run(
        image, command, environment=env or {}, network_mode="host", volumes=volumes or {}, detach=True
    )
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return code, out, err


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1] if out.strip() else ""


def airflow_env(postgres: Postgres) -> dict[str, str]:
    return {
        # The async URL (postgresql+asyncpg) is derived by Airflow from this one.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url("postgresql+psycopg2"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,  # every component shares it; never baked in
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }


# Builds each deferred wait's trigger as mlbatch does and opens the async client it polls with; the
# clients are never called (no AWS here): creating them is what needs aiobotocore and aiohttp.
ASYNC_CLIENTS_PROBE = """
import asyncio
from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook
from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger
from mlbatch.backends.launchers.ecs_trigger import EcsJobDoneTrigger

async def main():
    ecs = EcsJobDoneTrigger(cluster="c", task_arn="arn:aws:ecs:us-east-1:1:task/c/0", waiter_delay=1,
                            waiter_max_attempts=1, aws_conn_id=None, region_name="us-east-1")
    rs = RedshiftDataTrigger(statement_id="s", task_id="t", poll_interval=1, aws_conn_id=None, region_name="us-east-1")
    names = []
    for trigger, hook in ((ecs, EcsHook(aws_conn_id=None, region_name="us-east-1")),
                          (rs, RedshiftDataHook(aws_conn_id=None, region_name="us-east-1"))):
        async with await hook.get_async_conn() as client:
            names += [type(trigger).__name__, client.meta.service_model.service_name]
    print(*names)

asyncio.run(main())
"""


def test_image_runs_as_the_helm_chart_expects(airflow_image: str, docker_client: DockerClient) -> None:
    config = docker_client.images.get(airflow_image).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/entrypoint"]  # not ["airflow"]
    assert config["User"] == "50000:0"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["AIRFLOW_HOME"] == "/opt/airflow" and env["MLBATCH_PROJECT_DIR"] == "/opt/airflow"
    assert env["MLBATCH_IMAGE"] == airflow_image and env["MLBATCH_CODE_VERSION"] == airflow_image.split(":")[1]

    # The chart's forms: `bash -c "exec airflow ..."`, a plain `airflow ...`, and a bare subcommand.
    code, out, err = run(
        docker_client, airflow_image, ["bash", "-c", "echo $(id -u):$(id -g):$$ && exec airflow version"]
    )
    assert code == 0, err
    ids, version = out.split()[:2]
    assert ids.startswith("50000:0:") and ids != "50000:0:1"  # tini is PID 1, not the shell
    assert version.startswith("3.3.")
    for command in (["airflow", "version"], ["version"]):
        code, out, err = run(docker_client, airflow_image, command)
        assert (code, out.strip()) == (0, version), (command, err)

    probe = (
        "import importlib.util, json; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
        "['torch', 'xgboost', 'sklearn', 'moto', 'pytest', 'ruff', 'psycopg2', 'asyncpg', 'pymysql', "
        "'aiomysql', 'airflow.providers.amazon', 'airflow.providers.celery', 'mlbatch', 'devtools']}))"
    )
    code, out, err = run(docker_client, airflow_image, ["python", "-c", probe])
    assert code == 0, err
    found = json.loads(out)
    assert [m for m in ("torch", "xgboost", "sklearn", "moto", "pytest", "ruff", "devtools") if found[m]] == []
    assert all(found[m] for m in ("psycopg2", "asyncpg", "pymysql", "aiomysql", "mlbatch")), found
    assert found["airflow.providers.amazon"] and found["airflow.providers.celery"]
    # Every launcher imports in the worker's image (they import jobs.cpus, copied in with the contract).
    code, out, err = run(
        docker_client,
        airflow_image,
        ["python", "-c", "import mlbatch.backends.launchers.local, mlbatch.backends.launchers.ecs"],
    )
    assert code == 0, err
    # Every trigger mlbatch defers to builds its async client in the image (the triggerer's path):
    # without aiobotocore, get_async_conn() raised ModuleNotFoundError at the first deferred wait.
    code, out, err = run(docker_client, airflow_image, ["python", "-c", ASYNC_CLIENTS_PROBE])
    assert code == 0 and last_line(out) == "EcsJobDoneTrigger ecs RedshiftDataTrigger redshift-data", (out, err)
    # The demo is a development command: without devtools it says so instead of a traceback.
    code, out, err = run(docker_client, airflow_image, ["mlbatch", "demo"])
    assert code == 2 and "development command" in err and "Traceback" not in err, (code, out, err)


def test_db_migrate_on_postgres_and_every_dag_imports(
    airflow_image: str, docker_client: DockerClient, postgres: Postgres
) -> None:
    env = airflow_env(postgres)
    code, out, err = run(docker_client, airflow_image, ["bash", "-c", "exec airflow db migrate"], env)
    assert code == 0, f"airflow db migrate failed ({code}):\n{out[-3000:]}{err[-3000:]}"
    code, out, err = run(docker_client, airflow_image, ["airflow", "db", "check-migrations", "-t", "60"], env)
    assert code == 0, err[-3000:]

    code, out, err = run(
        docker_client, airflow_image, ["airflow", "dags", "list-import-errors", "--local", "-o", "json"], env
    )
    assert code == 0, err[-3000:]
    assert json.loads(last_line(out)) == [], out  # Airflow's warnings go to stdout before the JSON

    code, out, err = run(
        docker_client, airflow_image, ["bash", "-c", "airflow dags reserialize && airflow dags list -o json"], env
    )
    assert code == 0, err[-3000:]
    dag_ids = {d["dag_id"] for d in json.loads(last_line(out))}
    assert {f"{m}__{kind}" for m in SPECS for kind in ("labels", "train", "score")} <= dag_ids, dag_ids


def wait_for(what: str, check: Callable[[], bool], container: Any, timeout: float = 240) -> None:
    """Poll ``check()`` until it is true; the container's log in the failure if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            break
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(2)
    logs = container.logs().decode(errors="replace")[-4000:]
    pytest.fail(f"{what} not reached within {timeout:.0f} s (container {container.status}):\n{logs}")


def test_the_charts_commands_start_and_stop_cleanly(
    airflow_image: str, docker_client: DockerClient, postgres: Postgres, tmp_path: Path
) -> None:
    """The scheduler, API server and a Celery worker, started with the official chart's commands,
    come up (the API reports the scheduler healthy; the worker joins the broker) and stop on
    SIGTERM with exit code 0: tini passes the signal on and `exec` leaves no shell in between."""
    redis = start_redis(tmp_path)
    port = free_port()
    env = {
        **airflow_env(postgres),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres.url("postgresql+psycopg2"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
    }
    code, _, err = run(docker_client, airflow_image, ["bash", "-c", "exec airflow db migrate"], env)
    assert code == 0, err[-3000:]
    commands = {
        "scheduler": ["bash", "-c", "exec airflow scheduler"],
        "api-server": ["bash", "-c", "exec airflow api-server"],
        "worker": ["bash", "-c", "exec \\\nairflow celery worker"],  # the chart's worker args, verbatim
    }
    containers = {
        name: docker_client.containers.run(airflow_image, cmd, environment=env, network_mode="host", detach=True)
        for name, cmd in commands.items()
    }
    try:

        def scheduler_healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as resp:
                health = json.load(resp)
            return health["metadatabase"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy"

        wait_for("the API server reporting a healthy scheduler", scheduler_healthy, containers["api-server"])
        wait_for(
            "the Celery worker ready",
            lambda: b"ready." in containers["worker"].logs(),
            containers["worker"],
        )
        for name, container in containers.items():
            container.stop(timeout=60)  # SIGTERM, then SIGKILL after 60 s
            code = container.wait(timeout=90)["StatusCode"]
            assert code == 0, f"{name} exited {code} on SIGTERM:\n{container.logs().decode(errors='replace')[-3000:]}"
    finally:
        for container in containers.values():
            container.remove(force=True)
        redis.stop()


def write_label_file(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["device_id", "gender"])
        for i in range(rows):
            w.writerow([1000 + i, "female" if i % 3 else "male"])
        w.writerow(["not-a-number", "male"])  # rejected: invalid_key


def test_a_task_runs_in_the_container_against_mariadb_and_s3(
    airflow_image: str,
    docker_client: DockerClient,
    postgres: Postgres,
    mariadb_url: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    import boto3
    from sqlalchemy import create_engine, text

    bucket = f"airflow-image-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    home = tmp_path / "home"
    write_label_file(home / "sheets" / f"{MODEL}.csv", 1200)
    for p in (home, *home.rglob("*")):
        p.chmod(0o777 if p.is_dir() else 0o666)  # the container's user (50000) writes the verdicts back
    tmp_path.chmod(0o755)

    canary = f"canary-{uuid.uuid4().hex}"  # moto takes any secret key: this one must never be logged
    env = {
        **airflow_env(postgres),
        "MLBATCH_HOME": "/mlbatch-home",
        "MLBATCH_APPDB_URL": mariadb_url,
        "MLBATCH_OBJECT_STORE": f"s3://{bucket}/mlbatch",
        # S3 through the Airflow connection, as in production (the task defaults to aws_default).
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": canary,
                "extra": {"region_name": "us-east-1", "endpoint_url": s3_endpoint},
            }
        ),
    }
    code, out, err = run(docker_client, airflow_image, ["bash", "-c", "exec airflow db migrate"], env)
    assert code == 0, err[-3000:]
    code, out, err = run(
        docker_client,
        airflow_image,
        ["airflow", "tasks", "test", f"{MODEL}__labels", "check_sheet", DS],
        env,
        volumes={str(home): {"bind": "/mlbatch-home", "mode": "rw"}},
    )
    logs = out[-4000:] + err[-4000:]
    assert code == 0, f"the task failed in the container ({code}):\n{logs}"
    assert canary not in out + err  # the connection's secret is never logged

    engine = create_engine(mariadb_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT sync_id, rows_read, accepted, rejected, verdict FROM ml_label_syncs WHERE model = :m"),
            {"m": MODEL},
        ).all()
    engine.dispose()
    assert len(rows) == 1, rows
    sync_id, read, accepted, rejected, verdict = rows[0]
    assert (read, accepted, rejected, verdict) == (1201, 1200, 1, "checked")

    staged = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).list_objects_v2(Bucket=bucket, Prefix=f"mlbatch/labels/{MODEL}/staged/")
    assert [o["Key"] for o in staged.get("Contents", [])] == [f"mlbatch/labels/{MODEL}/staged/{sync_id}.parquet"]
    # The verdicts went back into the analyst's file, written by the container's user.
    header = (home / "sheets" / f"{MODEL}.csv").read_text().splitlines()[0]
    assert "status" in header
