"""Container entrypoints (``python -m jobs.train``, ``python -m jobs.score``) and model families.

Runs in slim train/score images: stdlib, numpy, pyarrow, xgboost and scikit-learn only. It never
imports Airflow or the ``mlbatch`` plugin package; everything it needs arrives as URIs on the
command line, and credentials come from the environment.
"""
