"""Maths: drift (PSI), the gates' checks, key counting, realized metrics, the retraining policy.

Pure functions of numbers, frames and the spec: no I/O, no backend, no Airflow.
"""
