"""A train job killed midway, as a Spot interruption kills an ECS task, and launched again
resumes from the checkpoint it left in S3 and ends with the uninterrupted run's metric.

Through the local launcher (SIGKILL of the job's process group) and the Docker launcher (``docker
kill``, SIGKILL, of the real train container), both against the moto S3 server. The kill comes as
soon as the checkpoint object exists; the relaunch is the launcher's ordinary retry. The settings
are xgboost's deterministic ones (no row or column sampling), so "the same metric" is equality
to 1e-6, not a statistical tolerance.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from mlbatch.backends.launchers import JobFailed, JobId, JobRequest
from mlbatch.backends.launchers.base import Launcher
from mlbatch.backends.launchers.local import LocalProcessLauncher
from mlbatch.backends.store import ObjectStore, filesystem_for

from devtools.devservers import s3_environment
from tests.support.jobs import features_table, put_parquet

N = 8000  # about 3 s of boosting on one core: time to kill it after its first checkpoint
EVERY = 20
PARAMS = {
    "n_estimators": 200,
    "max_depth": 6,
    "learning_rate": 0.05,
    "early_stopping_rounds": 200,  # every round runs: the kill always lands mid-training
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "checkpoint": {"every": EVERY, "max_fraction": 1.0},
}
CHECKPOINT = "checkpoint/checkpoint.bin"


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Iterator[ObjectStore]:
    import boto3

    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_environment(s3_endpoint).items():
            mp.setenv(k, v)
        bucket = f"resume-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield ObjectStore(f"s3://{bucket}/root")


@pytest.fixture(scope="module")
def inputs(s3: ObjectStore) -> dict[str, str]:
    """A two-part UNLOAD and its manifest, and a labels snapshot, on S3."""
    table, truth = features_table(n=N, seed=5)
    entries = []
    for i, part in enumerate((table.slice(0, N // 2), table.slice(N // 2))):
        uri = put_parquet(s3, f"unload/train/{i:04d}_part_00.parquet", part)
        entries.append({"url": uri, "meta": {"content_length": 0, "record_count": part.num_rows}})
    s3.put_bytes("unload/train/manifest", json.dumps({"entries": entries, "meta": {"record_count": N}}).encode())
    classes = ["female", "male"]
    labels = pa.table(
        {"entity_key": pa.array(np.arange(1000, 1000 + N), pa.int64()), "label": [classes[t] for t in truth]}
    )
    return {"manifest": s3.uri("unload/train/manifest"), "labels": put_parquet(s3, "labels/1.parquet", labels)}


def train_request(s3: ObjectStore, inputs: dict[str, str], version: str) -> JobRequest:
    """The train job of one model version (its config written beside its output prefix)."""
    config = {
        "model": "device_gender",
        "version": version,
        "entity_key": "device_id",
        "classes": ["female", "male"],
        "family": "xgboost",
        "params": PARAMS,
        "metric": "roc_auc",
        "seed": 7,
    }
    s3.put_bytes(f"models/device_gender/{version}/job_config.json", json.dumps(config).encode())
    out = s3.uri(f"models/device_gender/{version}") + "/"
    return JobRequest(
        job_id=JobId("device_gender__train", "train", f"manual__{version}"),
        module="jobs.train",
        args=["--config", out + "job_config.json", "--features", inputs["manifest"], "--labels", inputs["labels"]]
        + ["--output", out],
        success_uri=out + "_SUCCESS",
        vcpu=1,
        memory_gib=2,
        env={"MLBATCH_XGB_DEVICE": "cpu"},
    )


def _prefix(s3: ObjectStore, request: JobRequest) -> str:
    return s3.key(request.success_uri).removesuffix("_SUCCESS")


def kill_after_first_checkpoint(
    launcher: Launcher, s3: ObjectStore, request: JobRequest, kill: Callable[[], None]
) -> BaseException:
    """Run the job, kill it once its checkpoint is in S3; the launcher's error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            launcher.run(request)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    checkpoint = _prefix(s3, request) + CHECKPOINT
    deadline = time.monotonic() + 120
    while not s3.exists(checkpoint) and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not s3.exists(checkpoint):
        worker.join(timeout=60)
        pytest.fail(f"the job wrote no checkpoint before it ended: {errors}")
    kill()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(errors) == 1, errors
    return errors[0]


def check_resumed(s3: ObjectStore, request: JobRequest, reference: dict) -> dict:
    """The relaunched job resumed from a checkpoint and ended with the reference's metric."""
    prefix = _prefix(s3, request)
    marker = json.loads(s3.get_bytes(prefix + "_SUCCESS"))
    resumed_from = marker["checkpoint"]["resumed_from"]
    assert resumed_from is not None and resumed_from % EVERY == 0 and 0 < resumed_from < PARAMS["n_estimators"]
    # Removed once the marker was written, folder and all (no empty "checkpoint/" object left).
    fs, path = filesystem_for(s3.uri(prefix + "checkpoint"))
    assert fs.get_file_info(path).type == pafs.FileType.NotFound
    metrics = json.loads(s3.get_bytes(prefix + "metrics.json"))
    assert metrics["roc_auc"] == pytest.approx(reference["roc_auc"], abs=1e-6)
    assert metrics["log_loss"] == pytest.approx(reference["log_loss"], abs=1e-6)
    assert metrics["best_iteration"] == reference["best_iteration"]
    return marker


# --- the local launcher -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(s3: ObjectStore, tmp_path_factory: pytest.TempPathFactory) -> LocalProcessLauncher:
    return LocalProcessLauncher(s3, tmp_path_factory.mktemp("jobs"))


@pytest.fixture(scope="module")
def reference(local: LocalProcessLauncher, s3: ObjectStore, inputs: dict[str, str]) -> dict:
    """The same training, never interrupted: its metrics."""
    request = train_request(s3, inputs, f"v-whole-{uuid.uuid4().hex[:6]}")
    local.run(request)
    metrics = json.loads(s3.get_bytes(_prefix(s3, request) + "metrics.json"))
    assert json.loads(s3.get_bytes(_prefix(s3, request) + "_SUCCESS"))["checkpoint"]["resumed_from"] is None
    return metrics


def test_local_train_killed_midway_resumes_from_its_checkpoint(local, s3, inputs, reference) -> None:
    request = train_request(s3, inputs, f"v-local-{uuid.uuid4().hex[:6]}")

    def sigkill() -> None:
        state = json.loads(Path(local.jobs_dir, f"{request.job_id.token}.json").read_text())
        os.killpg(int(state["pid"]), signal.SIGKILL)  # no SIGTERM first: a Spot reclaim gives no grace here

    err = kill_after_first_checkpoint(local, s3, request, sigkill)
    assert isinstance(err, JobFailed) and "killed by signal 9" in str(err)
    assert not s3.exists(s3.key(request.success_uri))
    started = time.monotonic()
    result = local.run(request)  # the retry: a fresh process, which finds the checkpoint
    assert result.reused is False
    log = Path(local.jobs_dir, f"{request.job_id.token}.log").read_text()
    marker = check_resumed(s3, request, reference)
    assert f"resuming from checkpoint at round {marker['checkpoint']['resumed_from']} of 200 (written 20" in log
    print(f"local: resumed from round {marker['checkpoint']['resumed_from']}, rerun {time.monotonic() - started:.1f} s")


# --- the Docker launcher: the real train image -------------------------------------------------


@pytest.fixture(scope="module")
def docker_launcher(s3: ObjectStore, images: dict[str, str], docker_client):
    from mlbatch.backends.launchers.docker import DockerConfig, DockerLauncher

    config = DockerConfig(
        train_image=images["train"],
        score_image=images["score"],
        network="host",  # moto listens on the worker's 127.0.0.1
        extra_pass_env=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),  # moto's dummy keys, tests only
    )
    return DockerLauncher(s3, config, client=docker_client)


def test_docker_train_killed_midway_resumes_from_its_checkpoint(
    docker_launcher, docker_client, s3, inputs, reference
) -> None:
    request = train_request(s3, inputs, f"v-docker-{uuid.uuid4().hex[:6]}")
    name = request.job_id.token
    started = time.monotonic()
    err = kill_after_first_checkpoint(docker_launcher, s3, request, lambda: docker_client.containers.get(name).kill())
    assert isinstance(err, JobFailed) and "exited with code 137" in str(err)  # SIGKILL
    assert not s3.exists(s3.key(request.success_uri))
    result = docker_launcher.run(request)  # removes the killed container, starts a new one
    assert result.reused is False
    marker = check_resumed(s3, request, reference)
    print(f"docker: resumed from round {marker['checkpoint']['resumed_from']}, {time.monotonic() - started:.1f} s")
