"""Stage functions: the work of every task, callable from Airflow and from the CLI alike.

Which step runs which function, in which order, is declared once in :mod:`mlbatch.airflow.pipeline`.
"""
