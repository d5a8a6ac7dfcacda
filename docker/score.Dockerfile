# The slim score image: `python3 -m jobs.score ...` for xgboost models (numpy, pyarrow, xgboost-cpu;
# no scikit-learn, no torch, no CUDA). Scoring a torch family needs torch: use the train image
# (MLBATCH_SCORE_IMAGE = the train image), or build this one with --build-arg TORCH=pypi|wheel.
#
# Production base: Debian 12 with CPython 3.11 (the jobs' wheels are cp311). Air-gapped builds
# (tests, no registry) pass the debootstrap base from docker/build-base.sh:
#   --build-arg BASE_IMAGE=mlbatch/debian-base:12
# Context and CA handling as in train.Dockerfile
# (`python -m mlbatch.launchers.images build score` assembles it).
ARG BASE_IMAGE=python:3.11-slim-bookworm

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
COPY docker/build/ca.crt /etc/ssl/mlbatch-build-ca.crt
ENV PIP_CERT=/etc/ssl/mlbatch-build-ca.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
RUN "$PYTHON" -m venv /opt/venv
COPY docker/requirements-score.txt /tmp/req/
RUN /opt/venv/bin/pip install -q --no-deps --only-binary :all: -r /tmp/req/requirements-score.txt
COPY docker/requirements-torch.txt /tmp/req/
COPY docker/build/wheels/ /tmp/wheels/
# Declared here, not above: a build arg is part of every later RUN's cache key.
ARG TORCH=none
RUN set -eu; \
    case "$TORCH" in \
      none) ;; \
      pypi) /opt/venv/bin/pip install -q --only-binary :all: -c /tmp/req/requirements-torch.txt torch==2.13.0 ;; \
      wheel) /opt/venv/bin/pip install -q --only-binary :all: -c /tmp/req/requirements-torch.txt /tmp/wheels/torch-2.13.0*.whl ;; \
      *) echo "TORCH must be none, pypi or wheel; got '$TORCH'" >&2; exit 2 ;; \
    esac; \
    /opt/venv/bin/pip check; \
    find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM runtime
ARG CODE_VERSION=unknown
LABEL org.opencontainers.image.title="mlbatch-score" \
      org.opencontainers.image.revision="${CODE_VERSION}"
COPY --from=build /opt/venv /opt/venv
COPY jobs/ /app/jobs/
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLBATCH_CODE_VERSION=${CODE_VERSION}
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python3", "-m"]
CMD ["jobs.score", "--help"]
