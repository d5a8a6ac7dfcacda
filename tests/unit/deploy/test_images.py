"""The images' Dockerfiles: bases pinned by digest, the train image's CUDA base matching the CUDA
wheels it installs (docker/train-cuda.txt, resolved with requirements/jobs.txt), and no GPU
visible to a container that was not given one. tests/integration/deploy/test_train_image.py
builds and runs the train image."""

from __future__ import annotations

import re

import pytest

from tests.support.paths import REPO

DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# CUDA release: the oldest Linux driver it needs (NVIDIA's CUDA Toolkit release notes, table 3).
CUDA_MIN_DRIVER = {"13.0": 580}


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def default_base(dockerfile) -> str:
    (line,) = [x for x in dockerfile.read_text().splitlines() if x.startswith("ARG BASE_IMAGE=")]
    return line.split("=", 1)[1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_image_is_pinned_by_digest(dockerfile):
    assert DIGEST.search(default_base(dockerfile)), f"{dockerfile.name}: base not pinned by digest"
    stages = set()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            source = line.split()[1]
            assert source == "${BASE_IMAGE}" or source in stages or DIGEST.search(source), line
            if " AS " in line:
                stages.add(line.split(" AS ")[1].strip())


def test_cuda_base_matches_the_cuda_wheels():
    base = default_base(REPO / "docker" / "train.Dockerfile")
    match = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-base-ubuntu22\.04@", base)
    assert match, base
    cuda = f"{match[1]}.{match[2]}"
    toolkit = pins(REPO / "docker" / "train-cuda.txt")["cuda-toolkit"]
    assert toolkit.startswith(f"{match[1]}.{match[2]}.{match[3]}"), (base, toolkit)
    # What docs/deploy.md names as the supported hosts' driver is what this CUDA needs.
    doc = (REPO / "docs" / "deploy.md").read_text()
    assert f"driver of {CUDA_MIN_DRIVER[cuda]} or" in doc and f"CUDA {cuda} build" in doc
    assert "amazon-linux-2023/gpu/recommended/image_id" in doc


def test_train_cuda_lock_agrees_with_the_jobs_set():
    jobs, cuda = pins(REPO / "requirements" / "jobs.txt"), pins(REPO / "docker" / "train-cuda.txt")
    assert cuda["torch"] == jobs["torch"]
    shared = (set(jobs) & set(cuda)) - {"torch"}
    assert not shared, f"pinned in both files: {shared}"
    # torch's CUDA 13 wheels, not the CUDA 12 ones xgboost brings (those stay in jobs.txt).
    assert {"nvidia-nccl-cu13", "nvidia-cudnn-cu13", "cuda-toolkit", "triton"} <= set(cuda)
    dockerfile = (REPO / "docker" / "train.Dockerfile").read_text()
    assert "-c /tmp/req/jobs.txt -c /tmp/req/train-cuda.txt torch==" in dockerfile


def test_the_train_image_shows_no_gpu_it_was_not_given():
    env = (REPO / "docker" / "train.Dockerfile").read_text()
    assert "NVIDIA_VISIBLE_DEVICES=void" in env and "NVIDIA_VISIBLE_DEVICES=all" not in env
