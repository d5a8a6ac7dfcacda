"""One model = one YAML spec, validated here.

A bad spec fails loudly and early: at DAG import (an import error for that model's DAG file
only) and in the CLI (exit 2). :class:`SpecError` names the file, the field and what is wrong;
that includes the feature SQL files, which must exist and render for a sample day.
This package imports nothing heavy: it runs on every DAG parse.

The sections are :mod:`mlbatch.spec.model` (and :mod:`~mlbatch.spec.retrain`), loading is
:mod:`mlbatch.spec.load`, the SQL templates :mod:`mlbatch.spec.query`. Their public names are
re-exported here: the one import path the rest of the package uses.
"""

from mlbatch.spec.load import find_spec, load_all, load_spec
from mlbatch.spec.model import (
    COLUMN_NAME,
    MODEL_NAME,
    REPO_ROOT,
    Approval,
    Entity,
    FeatureChecks,
    Features,
    FileSource,
    Gate,
    LabelColumns,
    Labels,
    ModelSpec,
    Monitoring,
    Publish,
    Resources,
    Score,
    ScoreResources,
    SheetSource,
    SpecError,
    Train,
    project_dir,
)
from mlbatch.spec.retrain import OnDrift, OnLabels, Retrain

__all__ = [
    "COLUMN_NAME",
    "MODEL_NAME",
    "REPO_ROOT",
    "Approval",
    "Entity",
    "FeatureChecks",
    "Features",
    "FileSource",
    "Gate",
    "LabelColumns",
    "Labels",
    "ModelSpec",
    "Monitoring",
    "OnDrift",
    "OnLabels",
    "Publish",
    "Resources",
    "Retrain",
    "Score",
    "ScoreResources",
    "SheetSource",
    "SpecError",
    "Train",
    "find_spec",
    "load_all",
    "load_spec",
    "project_dir",
]
