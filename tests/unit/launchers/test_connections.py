"""The AWS clients of the production path take their credentials from the Airflow AWS connection."""

import json

from mlbatch.backends.launchers.ecs import EcsConfig, EcsLauncher
from mlbatch.backends.store import ObjectStore


def test_ecs_and_cloudwatch_clients_use_the_aws_connection(monkeypatch, tmp_path):
    conn = {
        "conn_type": "aws",
        "login": "AKIDECSCONN",
        "password": "ecs-conn-secret",
        "extra": {"region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_JOBS", json.dumps(conn))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = EcsConfig.from_env(
        {
            "MLBATCH_ECS_CLUSTER": "ml-batch",
            "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "mlbatch-train",
            "MLBATCH_ECS_SCORE_TASK_DEFINITION": "mlbatch-score",
            "MLBATCH_AWS_CONN_ID": "aws_jobs",
        }
    )
    launcher = EcsLauncher(ObjectStore(tmp_path.as_uri()), config)
    for client in (launcher.ecs, launcher.logs):
        credentials = client._request_signer._credentials.get_frozen_credentials()
        assert (credentials.access_key, credentials.secret_key) == ("AKIDECSCONN", "ecs-conn-secret")
        assert client.meta.region_name == "eu-west-1"
