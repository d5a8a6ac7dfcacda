"""The jobs in real containers: dockerd started here, images built from the debootstrap base,
train and score run through DockerLauncher against the moto S3 server (``--network host``).

First run on a fresh machine builds everything (the build times and image sizes are printed);
later runs find the images by their content-hash tags and build nothing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlbatch.backends.launchers import JobFailed, JobId, JobRequest
from mlbatch.backends.launchers.docker import DockerConfig, DockerLauncher
from mlbatch.backends.store import ObjectStore, filesystem_for

from devtools.devservers import s3_environment
from tests.support.jobs import put_train_inputs

if TYPE_CHECKING:
    pass

N = 4000
DS = "2024-05-01"
RUN = uuid.uuid4().hex[:6]  # container names derive from run ids: no clash with an earlier test run


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Iterator[ObjectStore]:
    import boto3

    env = s3_environment(s3_endpoint)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        bucket = f"docker-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield ObjectStore(f"s3://{bucket}/root")


@pytest.fixture(scope="module")
def launcher(s3: ObjectStore, images: dict[str, str], docker_client) -> DockerLauncher:
    config = DockerConfig(
        train_image=images["train"],
        score_image=images["score"],
        network="host",  # moto listens on the worker's 127.0.0.1
        extra_pass_env=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),  # moto's dummy keys, tests only
    )
    return DockerLauncher(s3, config, client=docker_client)


@pytest.fixture(scope="module")
def inputs(s3: ObjectStore) -> dict[str, str]:
    """A two-part UNLOAD (parquet + Redshift manifest), a labels snapshot and a job config on S3."""
    return put_train_inputs(s3, n=N, unload_prefix=f"unload/device_gender/train/{DS}/", version="v-docker")


def train_request(inputs: dict[str, str], run_id: str) -> JobRequest:
    return JobRequest(
        job_id=JobId("device_gender__train", "train", run_id),
        module="jobs.train",
        args=["--config", inputs["config"], "--features", inputs["manifest"], "--labels", inputs["labels"]]
        + ["--output", inputs["model"]],
        success_uri=inputs["model"] + "_SUCCESS",
        vcpu=1,
        memory_gib=2,
    )


def score_request(store: ObjectStore, inputs: dict[str, str], run_id: str, shard: int, model: str = "") -> JobRequest:
    out = store.uri(f"predictions/device_gender/{DS}/{run_id}/part-{shard:04d}.parquet")
    return JobRequest(
        job_id=JobId("device_gender__score", "score", run_id, shard),
        module="jobs.score",
        args=["--model", model or inputs["model"], "--features", inputs["manifest"], "--output", out]
        + ["--ds", DS, "--model-version", "v-docker", "--shard", str(shard), "--shards", "2"],
        success_uri=out + "._SUCCESS",
    )


def created(client, name: str, since: float) -> list[dict]:
    """`create` events of containers named ``name`` since ``since`` (the daemon's own record)."""
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True, filters={"event": "create"})
    return [e for e in events if e.get("Actor", {}).get("Attributes", {}).get("name") == name]


@pytest.fixture(scope="module")
def trained(launcher: DockerLauncher, inputs: dict[str, str], s3: ObjectStore) -> dict[str, object]:
    request = train_request(inputs, f"manual__{RUN}")
    result = launcher.run(request)
    return {"request": request, "result": result}


def test_train_container_writes_model_artifacts(trained, s3: ObjectStore, images, docker_client) -> None:
    result, request = trained["result"], trained["request"]
    assert result.reused is False
    assert any("train:" in line for line in result.log_tail)  # the job's own log lines came through
    prefix = "models/device_gender/v-docker/"
    for name in ("model.json", "model_meta.json", "feature_schema.json", "metrics.json", "lineage.json", "_SUCCESS"):
        assert s3.exists(prefix + name), name
    metrics = json.loads(s3.get_bytes(prefix + "metrics.json"))
    assert metrics["roc_auc"] > 0.75 and metrics["n_train"] + metrics["n_valid"] + metrics["n_test"] == 2400
    lineage = json.loads(s3.get_bytes(prefix + "lineage.json"))
    # The job records the image it ran in (baked in at build time) and that image's content hash.
    assert lineage["image"] == images["train"]
    assert lineage["code_version"] == images["train"].split(":")[1]
    assert lineage["label_sync_id"] == 9
    # The container was given 1 CPU (a quota of 1 on a host of more cores): xgboost's pool is 1
    # thread, not one per host core that the quota would throttle.
    meta = json.loads(s3.get_bytes(prefix + "model_meta.json"))
    assert request.vcpu == 1 and meta["params"]["nthread"] == 1
    assert not docker_client.containers.list(all=True, filters={"name": request.job_id.token})  # removed on success


def test_retry_after_success_launches_nothing(trained, launcher: DockerLauncher, docker_client) -> None:
    request = trained["request"]
    since = time.time() - 1
    again = launcher.run(request)
    assert again.reused is True
    assert created(docker_client, request.job_id.token, since) == []


def test_score_shards_in_containers_write_predictions(
    trained, launcher, inputs, s3: ObjectStore, docker_client
) -> None:
    run_id = f"scheduled__{RUN}"
    # Shard 1's container is already running when the launcher is asked (a retry after the worker
    # died): the launcher must reattach to it, not start a second one.
    shard1 = score_request(s3, inputs, run_id, 1)
    since = time.time() - 1
    earlier = docker_client.containers.run(**launcher.run_kwargs(shard1))
    earlier.pause()  # holds it before it can write its marker; resumed once the launcher waits on it
    threading.Timer(1.0, earlier.unpause).start()
    results = [launcher.run(shard1), launcher.run(score_request(s3, inputs, run_id, 0))]
    assert [r.reused for r in results] == [False, False]
    assert len(created(docker_client, shard1.job_id.token, since)) == 1  # ours, before the launcher ran
    assert any('"rows"' in line for line in results[0].log_tail)  # shard 1's summary, read by reattaching

    tables = []
    for shard in (0, 1):
        key = f"predictions/device_gender/{DS}/{run_id}/part-{shard:04d}.parquet"
        assert json.loads(s3.get_bytes(key + "._SUCCESS"))["rows"] == N // 2
        fs, path = filesystem_for(s3.uri(key))
        tables.append(pq.read_table(path, filesystem=fs))
    preds = pa.concat_tables(tables)
    assert preds.schema.names == ["entity_key", "label", "score", "ds", "model_version"]
    assert sorted(preds.column("entity_key").to_pylist()) == list(range(1000, 1000 + N))
    assert set(preds.column("model_version").to_pylist()) == {"v-docker"}
    scores = preds.column("score").to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()


def test_failed_job_raises_with_its_last_log_lines(launcher, inputs, s3: ObjectStore, docker_client) -> None:
    missing = s3.uri("models/device_gender/no-such-version") + "/"
    request = score_request(s3, inputs, f"scheduled__bad{RUN}", 0, model=missing)
    with pytest.raises(JobFailed) as err:
        launcher.run(request)
    message = str(err.value)
    assert "exited with code 2" in message
    assert "no-such-version" in message  # the job's own stderr, naming what it could not read
    # Kept for `docker logs`; the next attempt replaces it.
    assert docker_client.containers.get(request.job_id.token).attrs["State"]["ExitCode"] == 2
    with pytest.raises(JobFailed):
        launcher.run(request)


def test_kill_stops_the_running_container(launcher, s3: ObjectStore, docker_client) -> None:
    # A stand-in for a long job: any module runs under the image's `python3 -m` entrypoint.
    request = JobRequest(
        job_id=JobId("device_gender__score", "score", f"kill__{uuid.uuid4().hex[:6]}", 0),
        module="timeit",
        args=["-n", "1", "-r", "1", "import time; time.sleep(600)"],
        success_uri=s3.uri("never/_SUCCESS"),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            launcher.run(request)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    name = request.job_id.token
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = docker_client.containers.list(filters={"name": name, "status": "running"})
        if found:
            break
        time.sleep(0.2)
    assert found, f"container {name} never started"
    launcher.kill()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], JobFailed)
    assert "exited with code 143" in str(errors[0])  # SIGTERM, not the 20 s SIGKILL fallback
    state = docker_client.containers.get(name).attrs["State"]
    assert state["Status"] == "exited" and not state["Running"]
    docker_client.containers.get(name).remove()
