# The train image: `python3 -m jobs.train ...` (runs jobs.score too, torch families included).
#
# Production base: NVIDIA's CUDA image (driver hooks and CUDA's compatibility libraries; xgboost
# and torch bring their own CUDA runtime libraries as wheels, so the `base` flavour is enough).
# Air-gapped builds (tests, no registry) pass the debootstrap base from docker/build-base.sh:
#   --build-arg BASE_IMAGE=mlbatch/debian-base:12
# TORCH: none (xgboost families only), pypi (torch==2.13.0 from PyPI, the CUDA build: production),
# wheel (a torch-2.13.0*.whl put in docker/build/wheels/: the CPU wheel, for CPU test images).
#
# The pins come from requirements/jobs.txt (one source for the dev venv and both job images).
# The context is the repo (`docker build -f docker/train.Dockerfile .` works as is) or what
# `mlbatch images build train` assembles: the same paths plus, optionally, docker/build/ca.crt (the
# CA bundle pip trusts while building; it stays in the build stage) and docker/build/wheels/.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04

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
COPY requirements/jobs.txt docker/build* /tmp/req/
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
      pypi) /opt/venv/bin/pip install -q --only-binary :all: -c /tmp/req/jobs.txt torch==2.13.0 ;; \
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
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python3", "-m"]
CMD ["jobs.train", "--help"]
