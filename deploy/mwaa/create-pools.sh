#!/bin/sh
# Create or resize mlbatch's Airflow pools on an MWAA environment, through MWAA's InvokeRestApi
# (Airflow's bulk pools endpoint: every pool created, or overwritten with its size here). Run it
# from a checkout after `make venv`, with the environment's settings (MLBATCH_SPECS_DIR for the GPU
# pool's size, MLBATCH_*_POOL_SLOTS) and AWS credentials allowed airflow:InvokeRestApi:
#   deploy/mwaa/create-pools.sh mlbatch-prod
# Checked by tests/unit/deploy/test_mwaa_pools.py (the call against botocore's model, the body
# against Airflow's own request model). The DAGs' tasks take these pools: run it before unpausing.
set -eu
if [ "$#" -ne 1 ]; then
    echo "usage: $0 MWAA_ENVIRONMENT_NAME" >&2
    exit 2
fi
body=$("${PYTHON:-.venv/bin/python}" -m mlbatch.airflow.pools --json)
aws mwaa invoke-rest-api --name "$1" --method PATCH --path /pools --body "$body"
