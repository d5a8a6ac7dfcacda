# The slim score image: `python3 -m jobs.score ...` for xgboost models (numpy, pyarrow, xgboost-cpu;
# no scikit-learn, no torch, no CUDA). Scoring a torch family needs torch: use the train image
# (MLBATCH_SCORE_IMAGE = the train image), or build this one with --build-arg TORCH=pypi|wheel.
#
# Production base: Debian 12 with CPython 3.11 (the jobs' wheels are cp311). Air-gapped builds
# (tests, no registry) pass the debootstrap base from docker/build-base.sh:
#   --build-arg BASE_IMAGE=mlbatch/debian-base:12
# Context and CA handling as in train.Dockerfile (`mlbatch images build score` assembles it).
# The pins come from requirements/jobs.txt: numpy, pyarrow, scipy and xgboost's version, installed
# as xgboost-cpu (the same library without CUDA, so every model the train image made loads here).
# Pinned by digest (the tag moves with every Debian point release); refresh with
# `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE_IMAGE} AS runtime
ARG PYTHON=python3.11
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
RUN set -eu; \
    if [ -f /tmp/req/ca.crt ]; then export PIP_CERT=/tmp/req/ca.crt; fi; \
    grep -E '^(numpy|pyarrow|scipy|xgboost)==' /tmp/req/jobs.txt | sed 's/^xgboost==/xgboost-cpu==/' > /tmp/req/score.txt; \
    test "$(wc -l < /tmp/req/score.txt)" -eq 4; \
    /opt/venv/bin/pip install -q --no-deps --only-binary :all: -r /tmp/req/score.txt
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
ARG IMAGE=mlbatch/score:dev
LABEL org.opencontainers.image.title="mlbatch-score" \
      org.opencontainers.image.revision="${CODE_VERSION}"
COPY --from=build /opt/venv /opt/venv
COPY jobs/ /app/jobs/
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLBATCH_IMAGE=${IMAGE} \
    MLBATCH_CODE_VERSION=${CODE_VERSION}
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python3", "-m"]
CMD ["jobs.score", "--help"]
