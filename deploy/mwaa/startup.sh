#!/bin/sh
# MWAA startup script: MWAA sources it before each component (scheduler, workers, web server,
# triggerer) starts, so the exports below are the components' environment. Replace the account,
# region, bucket, subnets and security group. Checked by tests/integration/deploy/test_mwaa_bundle.py
# (sourced, then read by mlbatch's own settings readers).
#
# The RDS CA bundle (the app DB connection's ssl_ca): upload global-bundle.pem to the DAGs folder as
# dags/certs/rds-global-bundle.pem; MWAA syncs it to /usr/local/airflow/dags/certs/ (no egress
# needed at start-up). Connections live in Secrets Manager (airflow/connections/<conn_id>) with
# MWAA's secrets backend configured as an Airflow configuration option.
export MLBATCH_PROJECT_DIR=/usr/local/airflow/dags
export MLBATCH_SPECS_DIR=/usr/local/airflow/dags/specs
export MLBATCH_HOME=/usr/local/airflow/mlbatch
export MLBATCH_OBJECT_STORE=s3://mlbatch-prod/mlbatch
export MLBATCH_WAREHOUSE=redshift://aws_default
export MLBATCH_APPDB_CONN_ID=mlbatch_appdb
export MLBATCH_AWS_CONN_ID=aws_default
export MLBATCH_AWS_REGION=eu-west-1
export MLBATCH_LAUNCHER=ecs
export MLBATCH_ECS_CLUSTER=mlbatch
export MLBATCH_ECS_TRAIN_TASK_DEFINITION=mlbatch-train
export MLBATCH_ECS_SCORE_TASK_DEFINITION=mlbatch-score
export MLBATCH_ECS_GPU_CAPACITY_PROVIDER=mlbatch-gpu
export MLBATCH_ECS_CPU_CAPACITY_PROVIDER=FARGATE
export MLBATCH_ECS_SUBNETS=subnet-0a1b2c3d4e5f60718,subnet-0b1c2d3e4f5a60718
export MLBATCH_ECS_SECURITY_GROUPS=sg-0c1d2e3f4a5b60718
export MLBATCH_GPU_POOL_SLOTS=4
