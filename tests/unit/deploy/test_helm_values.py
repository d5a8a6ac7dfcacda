"""deploy/helm/values.yaml: valid for the official chart, and it gives the code what it reads.

The chart (1.22.0, vendored in chart/ with its origin) validates the merged values against its
``values.schema.json`` on ``helm install``; this test merges and validates the same way (draft-07).
Then it renders what the chart puts in every Airflow container's environment (the chart's
``custom_airflow_environment`` helper: ``env`` as values, ``secret`` as secretKeyRef) with the
example Secret, and checks the code's own readers accept it: :class:`mlbatch.backends.env.Environment`,
:class:`mlbatch.backends.launchers.ecs.EcsConfig`, and Airflow's connection parser for every connection
the code looks up.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from jsonschema import Draft7Validator

from tests.support.paths import REPO

CHART = Path(__file__).parent / "chart"
VALUES = REPO / "deploy" / "helm" / "values.yaml"
SECRET = REPO / "deploy" / "helm" / "connections-secret.example.yaml"
IRSA = "eks.amazonaws.com/role-arn"


def helm_merge(defaults: Any, user: Any) -> Any:
    """Helm's coalescing: maps merge key by key, anything else (lists included) is replaced."""
    if isinstance(defaults, dict) and isinstance(user, dict):
        merged = dict(defaults)
        for key, value in user.items():
            merged[key] = helm_merge(defaults.get(key), value) if key in defaults else value
        return merged
    return user


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def rendered_env(values) -> dict[str, str]:
    """The environment every Airflow container gets from ``env`` and ``secret`` (the chart's helper)."""
    secret = yaml.safe_load(SECRET.read_text())
    env = {item["name"]: str(item["value"]) for item in values["env"]}
    for item in values["secret"]:
        assert item["secretName"] == secret["metadata"]["name"], item
        env[item["envName"]] = secret["stringData"][item.get("secretKey", "value")]
    return env


def test_values_are_valid_against_the_charts_schema(values):
    schema = json.loads((CHART / "values.schema.json").read_text())
    Draft7Validator.check_schema(schema)
    merged = helm_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    errors = sorted(Draft7Validator(schema).iter_errors(merged), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def unknown_keys(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "") -> list[str]:
    """Keys of ``value`` the schema does not name where it lists properties: the chart ignores them
    silently (its top level allows extra properties), which is how an IRSA annotation gets lost."""
    while "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    found = []
    if isinstance(value, dict) and "properties" in schema:
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key in schema["properties"]:
                found += unknown_keys(item, schema["properties"][key], root, where)
            elif not isinstance(extra, dict) and not schema.get("patternProperties"):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_keys(item, schema["items"], root, f"{path}[{i}]")
    return found


def test_every_key_is_one_the_chart_reads(values):
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert unknown_keys(values, schema, schema) == []
    # The doc's old advice: a top-level serviceAccount, which the schema lets through and the chart ignores.
    bad = {**values, "serviceAccount": {"annotations": {IRSA: "arn:aws:iam::123456789012:role/x"}}}
    assert unknown_keys(bad, schema, schema) == ["serviceAccount"]


def test_every_component_that_calls_aws_has_the_irsa_role(values):
    roles = {c: values[c]["serviceAccount"]["annotations"][IRSA] for c in ("workers", "scheduler", "triggerer")}
    roles["dagProcessor"] = values["dagProcessor"]["serviceAccount"]["annotations"][IRSA]
    assert len(set(roles.values())) == 1 and next(iter(roles.values())).startswith("arn:aws:iam::")


def test_the_only_executor_offered_is_installed(values):
    """CeleryExecutor needs the celery provider (in the image's set); KubernetesExecutor would need
    cncf-kubernetes, which the image does not have, so neither the values nor the doc offer it."""
    airflow_txt = (REPO / "requirements" / "airflow.txt").read_text()
    assert values["executor"] == "CeleryExecutor"
    assert "apache-airflow-providers-celery==" in airflow_txt
    assert "apache-airflow-providers-cncf-kubernetes" not in airflow_txt
    assert "KubernetesExecutor" not in (REPO / "docs" / "deploy.md").read_text()


def test_workers_preload_mlbatch_with_celerys_own_configuration(values):
    """The option names a module the image has, holding Airflow's Celery configuration itself;
    importing it (as the scheduler does) imports none of the task code: only a worker's
    ``worker_init`` does."""
    module, _, attribute = values["config"]["celery"]["celery_config_options"].rpartition(".")
    assert getattr(importlib.import_module(module), attribute) == DEFAULT_CELERY_CONFIG
    loaded = "print('mlbatch.stages.score' in sys.modules, 'pyarrow' in sys.modules)"
    probe = f"import sys, {module}; {loaded}; from celery.signals import worker_init; worker_init.send(None); {loaded}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    before, after = [line.split() for line in out.strip().splitlines() if line.split()[0] in ("True", "False")]
    assert before == ["False", "False"]  # what the scheduler pays: nothing
    assert after == ["True", "True"]  # what a worker imports once, before it forks the tasks


def test_airflow_version_is_the_images(values):
    pinned = [
        line.split("==")[1]
        for line in (REPO / "requirements" / "airflow.txt").read_text().splitlines()
        if line.startswith("apache-airflow==")
    ]
    assert pinned == [values["airflowVersion"]]


def test_the_rendered_environment_is_what_the_code_reads(rendered_env, monkeypatch):
    from mlbatch.backends.env import Environment
    from mlbatch.backends.launchers.ecs import EcsConfig

    for name, value in rendered_env.items():
        monkeypatch.setenv(name, value)
    env = Environment.from_env()
    assert env.launcher_kind == "ecs"
    assert env.object_store.startswith("s3://") and env.warehouse_url == "redshift://aws_default"
    assert env.appdb_conn_id == "mlbatch_appdb"
    ecs = EcsConfig.from_env(rendered_env)
    assert ecs.cluster == "mlbatch" and ecs.subnets and ecs.security_groups
    assert ecs.cpu_capacity_provider in ("FARGATE", "FARGATE_SPOT") or not ecs.cpu_capacity_provider.startswith(
        "FARGATE"
    )
    assert int(rendered_env["MLBATCH_GPU_POOL_SLOTS"]) > 0


def test_every_connection_the_code_reads_is_in_the_secret(rendered_env, values):
    from airflow.models.connection import Connection
    from mlbatch.airflow.callbacks import CONN_ID as ALERTS

    wanted = {
        rendered_env["MLBATCH_APPDB_CONN_ID"]: "mysql",
        rendered_env["MLBATCH_AWS_CONN_ID"]: "aws",
        rendered_env["MLBATCH_WAREHOUSE"].removeprefix("redshift://"): "aws",
        "google_cloud_default": "google_cloud_platform",  # labels.source.conn_id's default for sheets
        ALERTS: "http",
    }
    for conn_id, conn_type in wanted.items():
        raw = rendered_env.get(f"AIRFLOW_CONN_{conn_id.upper()}")
        assert raw, f"no secret entry gives AIRFLOW_CONN_{conn_id.upper()}"
        conn = Connection.from_json(raw, conn_id=conn_id)
        assert conn.conn_type == conn_type, conn_id
    appdb = json.loads(rendered_env["AIRFLOW_CONN_MLBATCH_APPDB"])
    mount = {m["name"]: m["mountPath"] for m in values["volumeMounts"]}["rds-ca"]
    assert Path(appdb["extra"]["ssl_ca"]).parent == Path(mount), "ssl_ca must name a file in the mounted CA folder"
    ca_volume = {v["name"]: v for v in values["volumes"]}["rds-ca"]
    assert ca_volume["configMap"]["name"] == "rds-ca"


@pytest.mark.parametrize("migrate_exit", [0, 1])
def test_the_migration_job_creates_the_pools_after_a_successful_migration(values, tmp_path, migrate_exit):
    """The job's shell line, run with stand-ins for ``airflow`` and ``python`` that record their
    arguments: the pools (python -m mlbatch.airflow.pools) come after the migration and only if it worked."""
    import subprocess

    job = helm_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)["migrateDatabaseJob"]
    assert job["applyCustomEnv"] is True  # the job gets `env` (MLBATCH_GPU_POOL_SLOTS, ...) too
    calls = tmp_path / "calls"
    for name, code in (("airflow", migrate_exit), ("python", 0)):
        stand_in = tmp_path / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit {code}\n')
        stand_in.chmod(0o755)
    proc = subprocess.run(job["args"], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=False)
    recorded = calls.read_text().splitlines()
    if migrate_exit:
        assert proc.returncode == 1 and recorded == ["airflow db migrate"]
    else:
        assert proc.returncode == 0 and recorded == ["airflow db migrate", "python -m mlbatch.airflow.pools"]
