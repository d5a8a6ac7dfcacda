"""A new model is a YAML spec and two SQL files: its DAGs run end to end on the embedded stack.

The model (``churn_risk``, owned by a team other than the examples') lives in a temporary
project: ``dags/specs/churn_risk.yaml``, ``sql/redshift/churn_risk/{training,scoring}.sql``, and
``dags/churn_risk.py``, a copy of the repo's DAG file (the same two lines for every model: it
builds the DAGs of the spec named like itself; a file per model keeps a broken spec an import
error of its own file). No Python is written for the model.

Its data is made with SQL only, in the embedded DuckDB warehouse: the source table, and the
analysts' label file written by DuckDB's COPY. Why SQL rather than a generator in
``devtools.synth`` driven by the spec's columns: the spec does not declare the source tables
or their columns (the SQL does), and a model's own team knows what its data looks like; SQL is
what they would write against the real warehouse, and it needs no code in this repo.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from tests.support.paths import REPO

BIN = Path(sys.executable).parent
DS = "2026-11-22"
MODEL = "churn_risk"
SUBSCRIBERS = 6_000

pytestmark = pytest.mark.e2e

SPEC = f"""\
name: {MODEL}
owner: growth-analytics
description: Which subscribers are about to cancel, for the retention team's calls.
entity: {{key: subscriber_id, type: integer}}
labels:
  source: {{file: sheets/{MODEL}.csv}}
  columns: {{key: subscriber_id, label: outcome}}
  classes: [churned, stayed]
  min_rows: 500
features:
  training_sql: sql/redshift/{MODEL}/training.sql
  scoring_sql: sql/redshift/{MODEL}/scoring.sql
  params: {{min_tenure_days: 7}}
  checks: {{min_rows: 500, max_null_fraction: 0.1}}
train:
  family: xgboost
  params: {{max_depth: 3, n_estimators: 40}}
  gate: {{metric: roc_auc, min: 0.7}}
score:
  shards: 1
"""

# Redshift SQL, as for production; the embedded warehouse runs its DuckDB transpilation.
QUERY = """\
-- {stage} rows: subscribers who signed up at least params.min_tenure_days before the run date.
SELECT
    s.subscriber_id,
    DATEDIFF(day, s.signup_date, {{{{ ds | sqldate }}}}) AS tenure_days,
    s.support_calls_30d,
    s.monthly_spend,
    s.logins_30d
FROM analytics.subscribers AS s
WHERE s.signup_date <= DATEADD(day, -{{{{ params.min_tenure_days | sqlnum }}}}, {{{{ ds | sqldate }}}})
"""

# The data, in SQL only: deterministic features from hash(), an outcome that depends on them
# (few logins and many support calls churn), and half the subscribers labelled by analysts.
SEED = f"""
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE OR REPLACE TABLE analytics.subscribers AS
SELECT
    i AS subscriber_id,
    DATE '2026-11-22' - CAST(30 + hash(i, 'tenure') % 700 AS INTEGER) AS signup_date,
    CAST(hash(i, 'calls') % 8 AS INTEGER) AS support_calls_30d,
    ROUND(5 + (hash(i, 'spend') % 4000) / 100.0, 2) AS monthly_spend,
    CAST(hash(i, 'logins') % 40 AS INTEGER) AS logins_30d,
    (hash(i, 'noise') % 1000) / 1000.0 AS noise
FROM range(1, {SUBSCRIBERS + 1}) AS t(i);
CREATE OR REPLACE TABLE analytics._truth_churn AS
SELECT subscriber_id,
       CASE WHEN support_calls_30d * 0.12 - logins_30d * 0.03 + noise * 0.6 > 0.35
            THEN 'churned' ELSE 'stayed' END AS outcome
FROM analytics.subscribers;
"""


def _env(home: Path, project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLBATCH_"))}
    env.update(
        MLBATCH_HOME=str(home),
        MLBATCH_PROJECT_DIR=str(project),
        MLBATCH_SPECS_DIR=str(project / "dags" / "specs"),
        AIRFLOW_HOME=str(REPO),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow' / 'airflow.db'}",
    )
    return env


def _mlbatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mlbatch"), *args], env=env, capture_output=True, text=True, timeout=900)


def _new_model_project(root: Path) -> Path:
    """The model as its team would add it: YAML, SQL, and the repo's DAG file copied."""
    project = root / "project"
    (project / "dags" / "specs").mkdir(parents=True)
    (project / "dags" / "specs" / f"{MODEL}.yaml").write_text(SPEC)
    shutil.copy(REPO / "dags" / "device_gender.py", project / "dags" / f"{MODEL}.py")
    sql = project / "sql" / "redshift" / MODEL
    sql.mkdir(parents=True)
    for stage in ("training", "scoring"):
        (sql / f"{stage}.sql").write_text(QUERY.format(stage=stage))
    # A second model whose data nobody made: the demo skips it and says why.
    lonely = SPEC.replace(f"name: {MODEL}", "name: lonely_model").replace(f"sheets/{MODEL}.csv", "sheets/lonely.csv")
    (project / "dags" / "specs" / "lonely_model.yaml").write_text(lonely)
    return project


def _seed_with_sql(home: Path) -> int:
    home.mkdir(parents=True, exist_ok=True)
    (home / "sheets").mkdir()
    sheet = home / "sheets" / f"{MODEL}.csv"
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute(SEED)
        con.execute(
            f"COPY (SELECT subscriber_id, outcome FROM analytics._truth_churn WHERE subscriber_id % 2 = 0 "
            f"ORDER BY subscriber_id) TO '{sheet}' (HEADER, DELIMITER ',')"
        )
    with open(sheet, newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def test_a_model_added_as_yaml_and_sql_runs_its_dags_end_to_end(tmp_path):
    project = _new_model_project(tmp_path)
    home = tmp_path / "home"
    labelled = _seed_with_sql(home)
    env = _env(home, project)

    demo = _mlbatch(env, "demo", "--ds", DS)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "skipped lonely_model: no synthetic data for it" in demo.stdout, demo.stdout
    for kind in ("labels", "train", "score"):
        assert f"running {MODEL}__{kind} for {DS}" in demo.stdout
    assert "device_gender" not in demo.stdout  # only the project's specs

    status = json.loads(_mlbatch(env, "status", "--json").stdout)
    model = {m["name"]: m for m in status["models"]}[MODEL]
    assert model["labels"]["rows"] == labelled
    assert model["production_model"]["metric"] == "roc_auc" and model["production_model"]["value"] >= 0.7
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        (eligible,) = con.execute(
            "SELECT count(*) FROM analytics.subscribers WHERE signup_date <= DATE '2026-11-22' - INTERVAL 7 DAY"
        ).fetchone()
        exported = con.execute(
            f"SELECT ds::VARCHAR, count(*) FROM ml_exports.{MODEL}_predictions GROUP BY 1"
        ).fetchall()
    assert model["predictions"] == {"latest_ds": DS, "rows": eligible}
    assert exported == [(DS, eligible)]


def test_the_dags_of_a_new_model_carry_its_own_owner(tmp_path):
    """No owner is special: the spec's owner is every task's owner and is in the DAG's doc."""
    project = _new_model_project(tmp_path)
    script = textwrap.dedent(f"""
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(project / "dags")!r})
        assert not bag.import_errors, bag.import_errors
        owners = {{t.owner for d in bag.dags.values() for t in d.tasks}}
        print(sorted(bag.dags), sorted(owners), all("growth-analytics" in d.doc_md for d in bag.dags.values()))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=_env(tmp_path / "home", project), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dags = [f"{MODEL}__labels", f"{MODEL}__score", f"{MODEL}__train"]
    assert proc.stdout.split("\n")[-2] == f"{dags} ['growth-analytics'] True"
