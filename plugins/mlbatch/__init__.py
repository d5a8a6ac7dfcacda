"""mlbatch: scheduled batch machine learning on AWS, native to Airflow 3.

The package Airflow imports from ``plugins/``: the model spec, the hooks that own each
boundary (app DB, warehouse, object store, label sheet, job launchers), the gates, the stage
functions that both the DAGs and the ``mlbatch`` CLI call, and the DAG factory.
"""

__version__ = "0.1.0"
