"""Airflow's settings on the embedded stack (a laptop, no deployment): this repo's airflow.cfg,
a SQLite metadata DB under MLBATCH_HOME, and the DAG folder that holds the specs' folder.

Here rather than in ``devtools.demo`` because ``mlbatch doctor`` (a production command) reads
the same Airflow DB when it runs on the embedded stack, and the Airflow image has no devtools.
"""

from __future__ import annotations

import os

from mlbatch.backends.env import Environment
from mlbatch.spec import REPO_ROOT


def airflow_environment(env: Environment) -> dict[str, str]:
    """Airflow settings for a local run: this repo's airflow.cfg, metadata DB under MLBATCH_HOME.
    Values already in the environment win, so a test or a user can point elsewhere."""
    airflow_dir = env.home / "airflow"
    airflow_dir.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME", str(REPO_ROOT)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ.get(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{airflow_dir / 'airflow.db'}"
        ),
        # The DAG files beside the specs' folder (dags/ and dags/specs/): a project elsewhere
        # (MLBATCH_SPECS_DIR) runs its own DAG files.
        "AIRFLOW__CORE__DAGS_FOLDER": os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", str(env.specs_dir.parent)),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_dir / "logs"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
