# The Airflow image: scheduler, API server, DAG processor, triggerer and LocalExecutor/Celery
# workers all run it, with a different command (`airflow scheduler`, `airflow api-server`, ...).
# It holds the pinned requirements (requirements.txt: Airflow 3.3, the amazon provider, the
# mlbatch libraries) and the repo's dags/, plugins/, sql/ and jobs/ (the jobs run in their own
# images; they are here for `mlbatch run` with the local launcher and for `mlbatch sql`).
#
#   docker build -f docker/airflow.Dockerfile -t mlbatch/airflow:dev .
#   docker build -f docker/airflow.Dockerfile --build-arg BASE_IMAGE=mlbatch/debian-base:12 .   # air-gapped
#
# No secrets are baked in. Production sets, through the environment or a secrets backend:
#   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (Postgres/MySQL), AIRFLOW__API_AUTH__JWT_SECRET (shared by
#   every component; the value in airflow.cfg is for local development only), AIRFLOW__CORE__AUTH_MANAGER
#   and the connections (aws_default, the Aurora and Redshift connections, mlbatch_alerts), plus
#   MLBATCH_OBJECT_STORE, MLBATCH_APPDB_URL, MLBATCH_LAUNCHER=ecs. `python -m mlbatch.pools` creates the
#   GPU pool (MLBATCH_GPU_POOL_SLOTS).
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
    useradd --uid 50000 --user-group --create-home --shell /usr/sbin/nologin airflow

FROM runtime AS build
ARG PYTHON=python3.11
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
RUN "$PYTHON" -m venv /opt/venv
COPY requirements.txt /tmp/req/requirements.txt
RUN /opt/venv/bin/pip install -q --no-deps -r /tmp/req/requirements.txt \
    && /opt/venv/bin/pip check \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM runtime
ARG CODE_VERSION=unknown
LABEL org.opencontainers.image.title="mlbatch-airflow" \
      org.opencontainers.image.revision="${CODE_VERSION}"
COPY --from=build /opt/venv /opt/venv
# AIRFLOW_HOME is the repo layout: airflow.cfg, dags/ (thin DAG files + specs), plugins/ (the mlbatch
# package; plugins/.airflowignore keeps the plugins manager out of it), sql/, jobs/.
COPY airflow.cfg pyproject.toml /opt/airflow/
COPY dags/ /opt/airflow/dags/
COPY plugins/ /opt/airflow/plugins/
COPY sql/ /opt/airflow/sql/
COPY jobs/ /opt/airflow/jobs/
# `mlbatch` runs from the source tree (its paths are relative to the repo root), so no wheel: a shim.
RUN set -eu; \
    printf '#!/opt/venv/bin/python\nfrom mlbatch.cli import main\nmain()\n' > /opt/venv/bin/mlbatch; \
    chmod 0755 /opt/venv/bin/mlbatch; \
    mkdir -p /opt/airflow/var/airflow; \
    chown -R airflow:airflow /opt/airflow/var
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/airflow/plugins:/opt/airflow \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False \
    MLBATCH_HOME=/opt/airflow/var \
    MLBATCH_CODE_VERSION=${CODE_VERSION}
WORKDIR /opt/airflow
USER 50000:50000
EXPOSE 8080
ENTRYPOINT ["airflow"]
CMD ["version"]
