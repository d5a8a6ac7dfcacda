"""Airflow DAGs of the device_gender model, built from specs/device_gender.yaml."""

from mlbatch.airflow.dag_factory import dags_for

globals().update(dags_for(__file__))
