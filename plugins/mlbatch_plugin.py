"""The mlbatch Airflow plugin: the report view behind each task's "Report" button
(:mod:`mlbatch.airflow.ui`). Loaded by the API server from the plugins folder; DAG files do not need it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from mlbatch.airflow.ui import PREFIX, create_app


class MlbatchPlugin(AirflowPlugin):
    name = "mlbatch"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "mlbatch reports"}]
