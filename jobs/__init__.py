"""Container entrypoints (``python -m jobs.train``, ``python -m jobs.score``) and model families.

Runs in slim train/score images: stdlib, numpy, pyarrow, scikit-learn, xgboost and torch (plus
matplotlib in the train image, for the ROC/PR plots only). It never
imports Airflow or the ``mlbatch`` plugin package; everything it needs arrives as URIs on the
command line, and credentials come from the environment.
"""
