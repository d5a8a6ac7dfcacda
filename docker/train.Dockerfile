# The train image: `python3 -m jobs.train ...` (runs jobs.score too, torch families included).
#
# Production base: NVIDIA's CUDA 13.0 image, pinned by digest (its NVIDIA_REQUIRE_CUDA=cuda>=13.0
# makes the NVIDIA runtime refuse, at start, a host whose driver is too old; xgboost and torch
# bring their own CUDA libraries as wheels, so the `base` flavour is enough). CUDA 13.0 because
# torch 2.13.0's PyPI build is a CUDA 13.0 build (cuda-toolkit==13.0.3, nvidia-*-cu13; resolved in
# docker/train-cuda.txt): it needs an NVIDIA driver >= 580. Supported host: the ECS GPU-optimized
# AMI for Amazon Linux 2023 (deploy/ecs/launch-template-gpu.json) at a release whose driver is 580
# or newer; the Amazon Linux 2 GPU AMI's driver is older (docs/deploy.md, "Images").
# Refresh the digest with `docker buildx imagetools inspect nvidia/cuda:13.0.3-base-ubuntu22.04`.
# Air-gapped builds (tests, no registry) pass a debootstrap base from docker/build-base.sh:
#   --build-arg BASE_IMAGE=mlbatch/debian-base:12          (Python preinstalled)
#   --build-arg BASE_IMAGE=mlbatch/cuda-standin:13.0.3     (the CUDA base's stand-in: no Python, the
#                                                          CUDA image's NVIDIA_* variables)
# TORCH: none (xgboost families only), pypi (torch==2.13.0 from PyPI, the CUDA build: production,
# its CUDA wheels pinned by docker/train-cuda.txt), wheel (a torch-2.13.0*.whl put in
# docker/build/wheels/: the CPU wheel, for CPU test images).
#
# The pins come from requirements/jobs.txt (one source for the dev venv and both job images).
# The context is the repo (`docker build -f docker/train.Dockerfile .` works as is) or what
# `mlbatch images build train` assembles: the same paths plus, optionally, docker/build/ca.crt (the
# CA bundle pip trusts while building; it stays in the build stage) and docker/build/wheels/.
ARG BASE_IMAGE=nvidia/cuda:13.0.3-base-ubuntu22.04@sha256:73ab6dfb3814a5097cd456736e70650ef9dc72343be4117d0400de78168760fe

FROM ${BASE_IMAGE} AS runtime
ARG PYTHON=python3.11
# The jobs' wheels are pinned for CPython 3.11: Debian 12 has it; Ubuntu 22.04 installs it.
RUN set -eu; \
    if ! command -v "$PYTHON" >/dev/null; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "$PYTHON" "$PYTHON-venv" ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin mlbatch

FROM runtime AS build
ARG PYTHON=python3.11
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
RUN "$PYTHON" -m venv /opt/venv
# `docker/build*` matches nothing in a plain build: the CA bundle and the wheels are optional.
COPY requirements/jobs.txt docker/train-cuda.txt docker/build* /tmp/req/
# --no-deps: exactly the pinned set (torch aside: its own step), nothing resolved at build time.
RUN set -eu; \
    if [ -f /tmp/req/ca.crt ]; then export PIP_CERT=/tmp/req/ca.crt; fi; \
    grep -v '^torch==' /tmp/req/jobs.txt > /tmp/req/train.txt; \
    /opt/venv/bin/pip install -q --no-deps --only-binary :all: -r /tmp/req/train.txt
# Declared here, not above: a build arg is part of every later RUN's cache key.
ARG TORCH=none
RUN set -eu; \
    if [ -f /tmp/req/ca.crt ]; then export PIP_CERT=/tmp/req/ca.crt; fi; \
    case "$TORCH" in \
      none) ;; \
      pypi) /opt/venv/bin/pip install -q --only-binary :all: -c /tmp/req/jobs.txt -c /tmp/req/train-cuda.txt torch==2.13.0 ;; \
      wheel) /opt/venv/bin/pip install -q --only-binary :all: -c /tmp/req/jobs.txt /tmp/req/wheels/torch-2.13.0*.whl ;; \
      *) echo "TORCH must be none, pypi or wheel; got '$TORCH'" >&2; exit 2 ;; \
    esac; \
    /opt/venv/bin/pip check; \
    find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM runtime
ARG CODE_VERSION=unknown
ARG IMAGE=mlbatch/train:dev
LABEL org.opencontainers.image.title="mlbatch-train" \
      org.opencontainers.image.revision="${CODE_VERSION}"
COPY --from=build /opt/venv /opt/venv
COPY jobs/ /app/jobs/
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLBATCH_IMAGE=${IMAGE} \
    MLBATCH_CODE_VERSION=${CODE_VERSION} \
    NVIDIA_VISIBLE_DEVICES=void \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# NVIDIA_VISIBLE_DEVICES=void (the CUDA base says `all`): a container sees only the GPUs it was
# given. The ECS agent sets the variable to the GPUs a task's resourceRequirements reserved, and
# Docker's --gpus to those it requested; with `all`, a CPU-only job of this image on a GPU host
# would see every GPU, outside ECS's GPU accounting.
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python3", "-m"]
CMD ["jobs.train", "--help"]
