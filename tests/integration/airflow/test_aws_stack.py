"""mlbatch in its AWS mode on a distributed Airflow stack, with doubles only at the wire.

The stack of test_distributed_stack.py (CeleryExecutor, two workers, PostgreSQL, Redis, the
scheduler, the DAG processor, a real ``airflow triggerer`` process), configured as production is:

- object store ``s3://``, launcher ``ecs``, warehouse ``redshift://<conn>`` (the Redshift Data
  API), the app DB through its Airflow connection with ``LOAD DATA FROM S3``;
- the AWS connection's ``endpoint_url`` points every real client (boto3 in the workers,
  aiobotocore in the triggerer, pyarrow's S3) at one :class:`AwsEndpoint` in this process:
  moto for S3 and CloudWatch Logs, the ECS double (each task a real container, its output in
  CloudWatch), the Redshift Data API double (statements executed on the embedded warehouse);
- Aurora is MariaDB behind the ``LOAD DATA FROM S3`` proxy, which refuses a load whose
  session has not activated the granted role, as Aurora MySQL 3 does.

The cycle: a label change → asset-triggered training on ECS → a score run (UNLOAD on
Redshift, scoring shards on ECS, publish with LOAD DATA FROM S3, export with COPY), the ECS
and Redshift waits deferred to the triggerer and resumed from it; then the stop paths: a
deferred ECS job marked failed, and one whose deferral times out, are stopped within 60 s.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.devservers import MariaDB, start_postgres, start_redis
from devtools.devservers.aurora_proxy import AuroraS3Proxy
from devtools.devservers.aws_wire import AwsEndpoint
from devtools.devservers.ecs_double import EcsDouble
from devtools.devservers.redshift_data_double import RedshiftDataDouble
from tests.integration.airflow.airflow_stack import (
    MODEL,
    SLOW,
    Canaries,
    Stack,
    airflow_env,
    free_port,
    label_sheets,
    start_airflow,
    today,
    write_dags,
)
from tests.integration.airflow.rest import appdb_rows, runs, succeeded, task_states, trigger

CLUSTER = "mlbatch"
LOG_GROUP = "/ecs/mlbatch"
LOAD_ROLE = "AWS_LOAD_S3_ACCESS"
REDSHIFT_CONN = "redshift_default"
STOPPED_WITHIN_S = 60


def _client(service: str, endpoint: str) -> Any:
    """The test's own boto3 client at the doubles (they accept any key)."""
    import boto3

    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


@pytest.fixture(scope="module")
def canaries() -> Canaries:
    return Canaries()


def _aurora_user(mariadb: MariaDB, canaries: Canaries) -> tuple[str, str]:
    """A database and a user as docs/deploy.md grants them: the load privilege only through a
    role that is not active by default (Aurora MySQL 3's AWS_LOAD_S3_ACCESS)."""
    from sqlalchemy import create_engine, text

    name = f"aws_{uuid.uuid4().hex[:8]}"
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
        conn.execute(text(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{canaries.appdb_password}'"))
        conn.execute(text(f"GRANT ALL ON `{name}`.* TO '{name}'@'127.0.0.1'"))
        conn.execute(text(f"GRANT PROCESS ON *.* TO '{name}'@'127.0.0.1'"))
        conn.execute(text(f"CREATE ROLE IF NOT EXISTS {LOAD_ROLE}"))
        conn.execute(text(f"GRANT {LOAD_ROLE} TO '{name}'@'127.0.0.1'"))  # granted, not a default role
    admin.dispose()
    return name, f"mysql+pymysql://{name}:{canaries.appdb_password}@127.0.0.1:{mariadb.port}/{name}"


def _register_task_definitions(endpoint: str, images: dict[str, str], specs: Path) -> list[str]:
    """Each model's task definitions as ``mlbatch ecs task-definitions`` renders them, registered
    through boto3 (the ECS double checks them against botocore's model and runs them)."""
    import mlbatch.cli.app  # noqa: F401 - loads the command modules first: importing one alone is an import cycle
    from mlbatch.cli.commands.ecs import TaskDefinitionSettings, task_definitions
    from mlbatch.spec import load_spec

    ecs = _client("ecs", endpoint)
    settings = TaskDefinitionSettings.from_env(
        {
            "MLBATCH_TRAIN_IMAGE": images["train"],
            "MLBATCH_SCORE_IMAGE": images["score"],
            "MLBATCH_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/mlbatch-jobs",
            "MLBATCH_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/mlbatch-ecs-execution",
            "MLBATCH_AWS_REGION": "us-east-1",
            "MLBATCH_ECS_LOG_GROUP": LOG_GROUP,
        }
    )
    _client("logs", endpoint).create_log_group(logGroupName=LOG_GROUP)
    families = []
    for path in sorted(specs.glob("*.yaml")):
        for family, definition in task_definitions(load_spec(path), settings).items():
            # Jobs stop within 5 s of StopTask here (ECS's default stopTimeout is 30 s).
            definition["containerDefinitions"][0]["stopTimeout"] = 5
            ecs.register_task_definition(**definition)
            families.append(family)
    return families


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mariadb, dockerd, docker_client, images, canaries) -> Iterator[Stack]:

    from devtools import synth

    home = tmp_path_factory.mktemp("aws-stack")
    pg = start_postgres(home, password=canaries.metadb_password)
    redis = start_redis(home, password=canaries.redis_password)
    warehouse = home / "warehouse.duckdb"  # what the Redshift double executes on: its own process's
    synth.build_warehouse(warehouse, ref_date=today())
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    ecs = EcsDouble(docker_client, endpoint_url=endpoint, clusters=[CLUSTER])
    redshift = RedshiftDataDouble(warehouse, endpoint_url=endpoint)
    aws = AwsEndpoint([ecs, redshift], port=port).start()
    bucket = f"aws-stack-{uuid.uuid4().hex[:8]}"
    _client("s3", endpoint).create_bucket(Bucket=bucket)
    dags = home / "dags"
    write_dags(dags)
    _no_approval(dags / "specs" / f"{MODEL}.yaml")  # the UI's approval is test_distributed_stack's
    families = _register_task_definitions(endpoint, images, dags / "specs")
    db_name, appdb_url = _aurora_user(mariadb, canaries)
    proxy = AuroraS3Proxy(mariadb.port, endpoint, required_role=LOAD_ROLE).start()
    api_port = free_port()
    with label_sheets(warehouse, home, canaries, "mlbatch-aws-stack") as (sheets, sheets_env):
        env = airflow_env(
            home,
            api_port,
            dags,
            pg.url(),
            redis.url,
            "db+" + pg.url("postgresql+psycopg2"),
            canaries.ui_password,
        )
        env.update(sheets_env)
        env.update(_aws_mode(endpoint, bucket, canaries))
        env.update(
            MLBATCH_APPDB_CONN_ID="mlbatch_appdb",
            AIRFLOW_CONN_MLBATCH_APPDB=json.dumps(
                {
                    "conn_type": "mysql",
                    "host": "127.0.0.1",
                    "port": proxy.port,
                    "schema": db_name,
                    "login": db_name,
                    "password": canaries.appdb_password,
                    "extra": {"aurora_load_role": LOAD_ROLE},
                }
            ),
        )
        st = Stack(home, f"http://127.0.0.1:{api_port}", env, canaries.ui_password, appdb_url=appdb_url)
        try:
            start_airflow(st, [f"{MODEL}__labels", f"{MODEL}__train", f"{SLOW}__labels", f"{SLOW}__train"])
            st.aws, st.proxy, st.sheets, st.families = aws, proxy, sheets, families  # type: ignore[attr-defined]
            yield st
        finally:
            st.stop()
            proxy.stop()
            aws.stop()
            redis.stop()
            pg.stop()


def _aws_mode(endpoint: str, bucket: str, canaries: Canaries) -> dict[str, str]:
    """Production's settings, with the AWS connection's endpoint_url at the doubles."""
    aws_conn = {"region_name": "us-east-1", "endpoint_url": endpoint}
    return {
        "MLBATCH_OBJECT_STORE": f"s3://{bucket}/mlbatch",
        "MLBATCH_LAUNCHER": "ecs",
        "MLBATCH_ECS_CLUSTER": CLUSTER,
        "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "mlbatch-train",  # family bases: RunTask names <base>-<model>-ec2
        "MLBATCH_ECS_SCORE_TASK_DEFINITION": "mlbatch-score",
        "MLBATCH_ECS_SUBNETS": "subnet-0a1b2c3d",  # awsvpc, as the task definitions ask
        "MLBATCH_ECS_SECURITY_GROUPS": "sg-0a1b2c3d",
        "MLBATCH_ECS_POLL_S": "2",  # waits: seconds here, not production's 30 s
        "MLBATCH_ECS_TRIGGER_POLL_S": "2",
        "MLBATCH_WAREHOUSE": f"redshift://{REDSHIFT_CONN}",
        "MLBATCH_AURORA_LOAD_FROM_S3": "1",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {"conn_type": "aws", "login": "AKIASTACKTESTS", "password": canaries.aws_secret, "extra": aws_conn}
        ),
        f"AIRFLOW_CONN_{REDSHIFT_CONN.upper()}": json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIASTACKTESTS",
                "password": canaries.aws_secret,
                "extra": {
                    **aws_conn,
                    "cluster_identifier": "mlbatch-dw",
                    "database": "dev",
                    "db_user": "mlbatch",
                    "iam_role": "arn:aws:iam::123456789012:role/mlbatch-redshift",
                },
            }
        ),
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _no_approval(spec: Path) -> None:
    import yaml

    doc = yaml.safe_load(spec.read_text())
    doc["train"].pop("approval", None)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))


def _fired(stack: Stack, dag_id: str, task_id: str) -> list[dict[str, Any]]:
    """The "Trigger fired event" lines the triggerer wrote for a task's deferred waits (its log
    for each trigger: ``<task log>.trigger.<triggerer job>.log`` under its own log folder)."""
    folder = stack.home / "airflow" / "logs" / f"dag_id={dag_id}"
    events = []
    for path in folder.glob(f"run_id=*/task_id={task_id}/**/*.trigger.*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"Trigger fired event"' in line:
                events.append(json.loads(line))
    return events


# --- 1. labels → asset event → training on ECS, its wait deferred ---------------------------------
@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, Any]:
    with stack.client() as api:
        labels = trigger(api, f"{MODEL}__labels")
        stack.wait("the label sync", lambda: succeeded(api, f"{MODEL}__labels", [labels["dag_run_id"]]))
        train = stack.wait(
            "a training run started by the labels asset",
            lambda: [r for r in runs(api, f"{MODEL}__train") if r["run_type"] == "asset_triggered"],
        )[0]
        stack.wait(
            "the asset-triggered training run",
            lambda: succeeded(api, f"{MODEL}__train", [train["dag_run_id"]]),
            timeout=900,
        )
        states = task_states(api, f"{MODEL}__train", train["dag_run_id"])
    return {"train": train, "states": states}


def test_training_ran_as_an_ecs_task_and_its_wait_resumed_from_the_triggerer(stack: Stack, trained) -> None:
    ecs = stack.aws["ecs"]  # type: ignore[attr-defined]
    started = [c for c in ecs.calls("RunTask") if c["overrides"]["containerOverrides"][0]["command"][0] == "jobs.train"]
    assert started, "no training task was started on ECS"
    assert ecs.invalid == []
    [(version,)] = appdb_rows(
        stack, "SELECT version FROM ml_model_versions WHERE model = :m AND status = 'production'", m=MODEL
    )
    assert version.startswith(today().strftime("%Y%m%d"))
    # Both waits were deferred to the triggerer process and fired there; the tasks then resumed
    # in a worker and succeeded (trained["states"]).
    for task_id in ("unload_training", "train"):
        fired = _fired(stack, f"{MODEL}__train", task_id)
        assert fired and all("'status': 'success'" in e["result"] for e in fired), (task_id, fired)
    assert trained["states"]["unload_training"] == trained["states"]["train"] == "success"


# --- 2. a score run: UNLOAD, shards on ECS, LOAD DATA FROM S3, COPY ---------------------------------
@pytest.fixture(scope="module")
def scored(stack: Stack, trained) -> dict[str, Any]:
    dag_id = f"{MODEL}__score"
    with stack.client() as api:
        stack.wait(f"{dag_id} to be parsed", lambda: api.get(f"/dags/{dag_id}").is_success)
        assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).is_success  # today's scheduled run starts
        run_ = trigger(api, dag_id)
        scheduled = stack.wait(
            "today's scheduled run", lambda: [r for r in runs(api, dag_id) if r["run_type"] == "scheduled"]
        )[0]
        ids = [run_["dag_run_id"], scheduled["dag_run_id"]]
        done = stack.wait("today's score runs", lambda: succeeded(api, dag_id, ids), timeout=900)
        done = next(r for r in done if r["dag_run_id"] == run_["dag_run_id"])
        states = task_states(api, dag_id, run_["dag_run_id"])
    return {"run": done, "scheduled": scheduled["dag_run_id"], "states": states}


def test_scoring_publishes_with_load_from_s3_and_exports_with_copy(stack: Stack, scored) -> None:
    [(rows, run_id)] = appdb_rows(
        stack, "SELECT rows_published, run_id FROM ml_publish_log WHERE model = :m AND ds = :d", m=MODEL, d=today()
    )
    assert rows > 1000 and run_id in {scored["run"]["dag_run_id"], scored["scheduled"]}
    [(count,)] = appdb_rows(stack, f"SELECT count(*) FROM {MODEL}_predictions WHERE ds = :d", d=today())
    assert count == rows
    proxy = stack.proxy  # type: ignore[attr-defined]
    assert proxy.loaded and not proxy.refused  # every load through FROM S3, each with its role active
    redshift = stack.aws["redshift-data"]  # type: ignore[attr-defined]
    sql = [s.upper() for s in redshift.executed_sql()]
    assert any(s.lstrip().startswith("UNLOAD") for s in sql) and any(s.lstrip().startswith("COPY") for s in sql)
    assert redshift.invalid == [] and stack.aws["ecs"].invalid == []  # type: ignore[attr-defined]
    shards = [
        c
        for c in stack.aws["ecs"].calls("RunTask")
        if c["overrides"]["containerOverrides"][0]["command"][0] == "jobs.score"
    ]  # type: ignore[attr-defined]
    assert len(shards) >= 2  # the spec's shards, each its own ECS task


def test_the_score_run_s_ecs_and_redshift_waits_were_deferred_and_resumed(stack: Stack, scored) -> None:
    dag_id = f"{MODEL}__score"
    for task_id in ("unload_scoring", "score", "export"):
        fired = _fired(stack, dag_id, task_id)
        assert fired and all("'status': 'success'" in e["result"] for e in fired), (task_id, fired)
    assert len(_fired(stack, dag_id, "score")) >= 2  # one deferred wait per shard
    assert {k: v for k, v in scored["states"].items() if v != "success"} == {}


# --- 3. stops: a deferred ECS job marked failed, and one whose deferral timed out -------------------
def _ecs_client(stack: Stack) -> Any:
    return _client("ecs", stack.aws.endpoint)  # type: ignore[attr-defined]


def _gone(stack: Stack, arn: str) -> bool:
    task = stack.aws["ecs"].tasks.get(arn)  # type: ignore[attr-defined]
    return task is None or not task.container_running()


@pytest.fixture(scope="module")
def slow_labels(stack: Stack, scored) -> None:
    with stack.client() as api:
        labels = trigger(api, f"{SLOW}__labels")
        stack.wait("the slow model's label sync", lambda: succeeded(api, f"{SLOW}__labels", [labels["dag_run_id"]]))


def _deferred_job(stack: Stack, api, dag_id: str, run_id: str) -> str:
    def deferred() -> str | None:
        states = task_states(api, dag_id, run_id)
        assert states.get("train") not in ("failed", "success"), states
        arns = [
            arn
            for arn, task in stack.aws["ecs"].tasks.items()  # type: ignore[attr-defined]
            if task.started_by and task.container_running() and dag_id in json.dumps(task.tags)
        ]
        return arns[-1] if arns and states.get("train") == "deferred" else None

    return stack.wait(f"the training job of {run_id} to be deferred", deferred, timeout=300)


def test_marking_a_deferred_ecs_job_failed_stops_its_task(stack: Stack, slow_labels) -> None:
    dag_id = f"{SLOW}__train"
    with stack.client() as api:
        train = stack.wait(
            "the slow model's asset-triggered training",
            lambda: [r for r in runs(api, dag_id) if r["run_type"] == "asset_triggered"],
        )[0]
        arn = _deferred_job(stack, api, dag_id, train["dag_run_id"])
        r = api.patch(f"/dags/{dag_id}/dagRuns/{train['dag_run_id']}/taskInstances/train", json={"new_state": "failed"})
        assert r.is_success, r.text
        stack.wait("the ECS task to stop", lambda: _gone(stack, arn), timeout=STOPPED_WITHIN_S, every=1)
    [described] = _ecs_client(stack).describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"]
    assert described["desiredStatus"] == "STOPPED" and "on_kill" in described.get("stoppedReason", ""), described


def test_a_deferral_that_times_out_stops_its_ecs_task(stack: Stack, slow_labels) -> None:
    dag_id = f"{SLOW}__train"
    with stack.client() as api:
        run_ = trigger(api, dag_id, dag_run_id=f"timeout_{uuid.uuid4().hex[:6]}")
        arn = _deferred_job(stack, api, dag_id, run_["dag_run_id"])
        started = time.monotonic()
        # train.timeout_minutes is 1: the deferral times out, the task resumes to fail and stops the job.
        stack.wait("the timed-out job's ECS task to stop", lambda: _gone(stack, arn), timeout=60 + STOPPED_WITHIN_S)
        assert time.monotonic() - started < 60 + STOPPED_WITHIN_S
        stack.wait(
            "the train task to be up for retry",
            lambda: task_states(api, dag_id, run_["dag_run_id"])["train"] in ("up_for_retry", "failed"),
            timeout=60,
        )
        r = api.patch(f"/dags/{dag_id}/dagRuns/{run_['dag_run_id']}", json={"state": "failed"})
        assert r.is_success, r.text


def test_no_credential_reaches_any_log(stack: Stack, canaries: Canaries, scored) -> None:
    from tests.integration.airflow.airflow_stack import iter_files

    logs = list(iter_files(stack.home / "logs")) + list(iter_files(stack.home / "airflow" / "logs"))
    for i in (1, 2):
        logs += list(iter_files(stack.home / f"worker{i}" / "logs"))
    texts = {p: p.read_text(errors="replace") for p in logs}
    leaks = {
        name: sorted(str(p.relative_to(stack.home)) for p, t in texts.items() if value in t)
        for name, value in canaries.values().items()
    }
    assert not {k: v for k, v in leaks.items() if v}
    assert len(texts) > 20  # component logs and both workers' task logs were read
