# The Airflow image: scheduler, API server, DAG processor, triggerer and Celery workers all run it,
# each with its own command. It holds requirements/airflow.txt only (Airflow 3.3, the amazon,
# celery, http and standard providers, the metadata DB drivers, what the DAG tasks import) and
# the repo's dags/, plugins/ and sql/. No torch, xgboost, scikit-learn or test tools: the jobs
# run in their own images (train.Dockerfile, score.Dockerfile) on ECS or Docker.
#
#   mlbatch images build airflow [--base-image mlbatch/debian-base:12]                  # content-hash tag
#   docker build -f docker/airflow.Dockerfile -t mlbatch/airflow:dev .                  # plain build
#
# Made for the official Helm chart, like the official image: user airflow (uid 50000, gid 0,
# files group-writable so any uid in group 0 works), AIRFLOW_HOME=/opt/airflow, tini as PID 1,
# and no `ENTRYPOINT ["airflow"]`: the chart's `bash -c "exec airflow scheduler"`,
# `airflow api-server`, `airflow celery worker` run as given; a bare subcommand (`scheduler`)
# gets `airflow` put in front (docker/airflow-entrypoint.sh).
#
# No secrets and no airflow.cfg are baked in (the repo's airflow.cfg is for local development).
# A deployment sets, through the chart's values, the environment or a secrets backend:
#   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (postgresql+psycopg2://... or mysql+pymysql://...; the
#   async driver, asyncpg or aiomysql, is derived from it), AIRFLOW__API_AUTH__JWT_SECRET,
#   the executor and broker, the connections (aws_default, the Aurora and Redshift ones,
#   mlbatch_alerts), MLBATCH_OBJECT_STORE, MLBATCH_WAREHOUSE, MLBATCH_LAUNCHER=ecs and the job images.
#
# Air-gapped builds (tests: no registry) pass the debootstrap base from docker/build-base.sh
# (--build-arg BASE_IMAGE=mlbatch/debian-base:12). A CA bundle for pip (a proxy's) is used when
# the context has docker/build/ca.crt; `mlbatch images build` puts it there.
# Pinned by digest (the tag moves with every Debian point release); refresh with
# `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE_IMAGE} AS runtime
ARG PYTHON=python3.11
RUN set -eu; \
    apt-get update -qq; \
    packages="tini"; \
    command -v "$PYTHON" >/dev/null || packages="$packages $PYTHON $PYTHON-venv ca-certificates"; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow

FROM runtime AS build
ARG PYTHON=python3.11
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
RUN "$PYTHON" -m venv /opt/venv
# `docker/build*` matches nothing in a plain build: the CA bundle is optional.
COPY requirements/airflow.txt docker/build* /tmp/req/
# --no-deps: exactly the pinned set, nothing resolved at build time; `pip check` proves it whole.
RUN set -eu; \
    if [ -f /tmp/req/ca.crt ]; then export PIP_CERT=/tmp/req/ca.crt; fi; \
    /opt/venv/bin/pip install -q --no-deps -r /tmp/req/airflow.txt; \
    /opt/venv/bin/pip check; \
    find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM runtime
ARG CODE_VERSION=unknown
ARG IMAGE=mlbatch/airflow:dev
LABEL org.opencontainers.image.title="mlbatch-airflow" \
      org.opencontainers.image.revision="${CODE_VERSION}"
COPY --from=build /opt/venv /opt/venv
COPY docker/airflow-entrypoint.sh /entrypoint
# AIRFLOW_HOME keeps the repo's layout: dags/ (thin DAG files + specs; the chart's git-sync or
# volume may replace it), plugins/ (the mlbatch package; plugins/.airflowignore keeps the plugins
# manager out of it), sql/. MLBATCH_PROJECT_DIR tells mlbatch where specs' relative paths start.
COPY --chown=50000:0 dags/ /opt/airflow/dags/
COPY --chown=50000:0 plugins/ /opt/airflow/plugins/
# Of the jobs, the two standard-library modules mlbatch imports: the contract (metric and family
# names, the train config: mlbatch.spec) and cpus (the local launcher's share of its host). The
# jobs themselves run in their own images.
COPY --chown=50000:0 jobs/__init__.py jobs/contract.py jobs/cpus.py /opt/airflow/plugins/jobs/
COPY --chown=50000:0 sql/ /opt/airflow/sql/
# `mlbatch` runs from plugins/ (no wheel in this image): a shim on PATH.
RUN set -eu; \
    printf '#!/opt/venv/bin/python\nfrom mlbatch.cli.app import main\nmain()\n' > /opt/venv/bin/mlbatch; \
    chmod 0755 /opt/venv/bin/mlbatch /entrypoint; \
    mkdir -p /opt/airflow/logs /opt/airflow/var; \
    chown -R 50000:0 /opt/airflow; \
    chmod -R g+rwX /opt/airflow
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/airflow/plugins \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_UID=50000 \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MLBATCH_PROJECT_DIR=/opt/airflow \
    MLBATCH_HOME=/opt/airflow/var \
    MLBATCH_IMAGE=${IMAGE} \
    MLBATCH_CODE_VERSION=${CODE_VERSION}
WORKDIR /opt/airflow
USER 50000:0
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/entrypoint"]
CMD ["airflow", "version"]
