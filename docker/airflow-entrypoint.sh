#!/usr/bin/env bash
# The Airflow image's entrypoint, behind tini (PID 1: it reaps children and passes signals on).
# The official Helm chart runs commands such as `bash -c "exec airflow scheduler"` and
# `airflow db check-migrations`, so a command that exists runs as given; a bare Airflow
# subcommand (`scheduler`, `api-server`, `celery worker`) gets `airflow` put in front, as in
# the official image.
set -euo pipefail
if [[ $# -eq 0 ]]; then
    set -- airflow version
elif ! command -v "$1" >/dev/null 2>&1; then
    set -- airflow "$@"
fi
exec "$@"
