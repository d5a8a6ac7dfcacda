"""Airflow DAGs of the recipe_category model, built from specs/recipe_category.yaml."""

from mlbatch.airflow.dag_factory import dags_for

globals().update(dags_for(__file__))
