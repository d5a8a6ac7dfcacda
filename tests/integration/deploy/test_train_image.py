"""The production train image's Dockerfile, built on a stand-in for its CUDA base.

nvidia/cuda cannot be pulled here (no registry), so docker/build-base.sh --cuda-standin makes what
the Dockerfile sees of it: no Python (the Dockerfile's apt step installs python3.11 and its venv
module, as on Ubuntu) and the CUDA image's NVIDIA_* environment. The image is built with
``mlbatch.backends.launchers.images.build_image``, then run. In ``make test`` torch comes from the CPU wheel
already on the machine (TORCH=wheel): the production install (TORCH=pypi: torch's CUDA build and
the CUDA wheels pinned by docker/train-cuda.txt) downloads about 4 GiB and takes some 17 minutes
cold; ``MLBATCH_TRAIN_IMAGE_TORCH=pypi`` runs it (and checks the CUDA 13.0 build), ``none``
builds without torch.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from mlbatch.backends.launchers.images import build_image

from tests.support.paths import REPO
from tests.support.terminal import say

STANDIN = "mlbatch/cuda-standin:13.0.3"
TORCH = os.environ.get("MLBATCH_TRAIN_IMAGE_TORCH", "wheel")


@pytest.fixture(scope="module")
def train_image(dockerd, docker_client, pytestconfig) -> str:
    start = time.monotonic()
    base = subprocess.run(
        [str(REPO / "docker" / "build-base.sh"), "--cuda-standin", STANDIN],
        env={**os.environ, "DOCKER_HOST": dockerd.host},
        capture_output=True,
        text=True,
    )
    assert base.returncode == 0, base.stdout + base.stderr
    img = build_image(docker_client, "train", base_image=STANDIN, torch=TORCH)
    say(
        pytestconfig,
        f"{img.tag} on {STANDIN} (TORCH={TORCH}): {time.monotonic() - start:.0f} s, {img.size_bytes / 2**20:.0f} MiB",
    )
    return img.tag


def run(client, image: str, command: list[str], entrypoint: list[str] | None = None) -> tuple[int, str]:
    container = client.containers.run(image, command, entrypoint=entrypoint, detach=True, network_mode="none")
    try:
        code = container.wait(timeout=300)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_the_standin_has_no_python_and_the_cuda_images_environment(docker_client, train_image):
    standin = docker_client.images.get(STANDIN).attrs["Config"]["Env"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in standin and "NVIDIA_REQUIRE_CUDA=cuda>=13.0" in standin
    code, out = run(docker_client, STANDIN, ["sh", "-c", "command -v python3 python3.11 || echo none"])
    assert out.strip() == "none", out


def test_the_train_image_runs_its_jobs_and_hides_gpus_it_was_not_given(docker_client, train_image):
    config = docker_client.images.get(train_image).attrs["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"  # overrides the CUDA base's `all`
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"  # kept: the runtime refuses an older driver
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["python3", "-m"]
    code, out = run(docker_client, train_image, ["jobs.train", "--help"])
    assert code == 0, out
    probe = "import sys, xgboost, sklearn; print(sys.version_info[:2] == (3, 11))"
    if TORCH != "none":
        probe += "; import torch; print(torch.version.cuda)"
    code, out = run(docker_client, train_image, ["-c", probe], entrypoint=["python3"])
    assert code == 0 and out.splitlines()[0] == "True", out
    # The CUDA build in production (pypi); the machine's CPU wheel (no CUDA runtime) in make test.
    expected_cuda = {"pypi": "13.0", "wheel": "None"}.get(TORCH)
    if expected_cuda is not None:
        assert out.splitlines()[1].startswith(expected_cuda), out
