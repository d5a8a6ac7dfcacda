"""DAG integrity: every spec's DAGs import cleanly, cheaply, and carry their documentation."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from tests.support.paths import REPO


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    print(f"\nDagBag parse: {len(bag.dags)} DAGs in {time.perf_counter() - started:.2f} s")
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_spec_has_its_three_dags(dagbag):
    for spec in sorted((REPO / "dags" / "specs").glob("*.yaml")):
        assert (REPO / "dags" / f"{spec.stem}.py").exists(), f"{spec.name} has no DAG file"
        for kind in ("labels", "train", "score"):
            assert f"{spec.stem}__{kind}" in dagbag.dags


def test_every_dag_has_owner_tags_doc_and_retries(dagbag):
    owners = {p.stem: yaml.safe_load(p.read_text())["owner"] for p in (REPO / "dags" / "specs").glob("*.yaml")}
    for dag_id, dag in dagbag.dags.items():
        owner = owners[dag_id.rsplit("__", 1)[0]]  # the spec's owner, whichever team that is
        assert dag.tags and "mlbatch" in dag.tags, dag_id
        assert dag.doc_md and owner in dag.doc_md, dag_id
        assert dag.max_active_runs == 1, dag_id
        for t in dag.tasks:
            assert t.owner == owner, (dag_id, t.task_id)
            assert t.doc_md, (dag_id, t.task_id)
            assert t.execution_timeout is not None, (dag_id, t.task_id)


def test_score_dag_runs_gates_between_stages_and_the_export_beside_the_publish(dagbag):
    dag = dagbag.dags["device_gender__score"]
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {
        "resolve_model": set(),
        "unload_scoring": {"resolve_model"},
        "features_gate": {"unload_scoring"},
        "score": {"features_gate"},
        "predictions_gate": {"score"},
        "publish": {"predictions_gate"},
        "export": {"predictions_gate"},  # not after the publish: it reads the gated shards
        "export_gate": {"publish", "export"},  # reconciles the warehouse with the publish log
    }


def test_dag_file_imports_no_heavy_modules():
    """Parsing must stay cheap: no pandas, pyarrow, xgboost, duckdb or stage code at DAG import."""
    code = (
        "import sys, runpy; sys.argv=['x'];"
        f"runpy.run_path({str(REPO / 'dags' / 'device_gender.py')!r});"
        "heavy=[m for m in ('pandas','pyarrow','xgboost','duckdb','torch','mlbatch.stages') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_spec_is_an_import_error_of_its_own_file_only(tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    (dags / "specs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "device_gender.py", dags / "device_gender.py")
    shutil.copy(REPO / "dags" / "specs" / "device_gender.yaml", dags / "specs" / "device_gender.yaml")
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["name"] = "broken_model"
    raw["train"]["gate"]["minimum"] = 0.5
    (dags / "specs" / "broken_model.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(REPO / "dags" / "device_gender.py", dags / "broken_model.py")

    bag = DagBag(dag_folder=str(dags))
    assert list(bag.import_errors) == [str(dags / "broken_model.py")]
    error = bag.import_errors[str(dags / "broken_model.py")]
    assert "broken_model.yaml" in error and "train.gate.minimum: unknown field" in error
    assert {"device_gender__labels", "device_gender__train", "device_gender__score"} <= set(bag.dags)


def test_every_dag_has_params_retries_callbacks_and_catchup_off(dagbag):
    from mlbatch.airflow.callbacks import on_task_failure

    extra = {"labels": set(), "train": {"force_retrain"}, "score": {"model_version"}}
    for dag_id, dag in dagbag.dags.items():
        kind = dag_id.rsplit("__", 1)[1]
        assert set(dag.params.keys()) == {"dry_run", *extra[kind]}, dag_id
        for name in dag.params.keys():
            assert dag.params.get_param(name).description, (dag_id, name)
        assert dag.catchup is False, dag_id
        for t in dag.tasks:
            gate = t.task_id.endswith("_gate")
            assert t.retries == (0 if gate else 2), (dag_id, t.task_id, t.retries)
            assert t.retry_exponential_backoff, (dag_id, t.task_id)
            assert on_task_failure in (t.on_failure_callback or []), (dag_id, t.task_id)


def test_schedules_come_from_the_spec_and_training_also_follows_new_labels(dagbag):
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    score = dagbag.dags["device_gender__score"].timetable
    labels = dagbag.dags["device_gender__labels"].timetable
    train = dagbag.dags["device_gender__train"].timetable
    assert isinstance(score, CronTriggerTimetable) and score.expression == "0 0 * * *"  # @daily
    assert isinstance(labels, CronTriggerTimetable) and labels.expression == "0 * * * *"  # @hourly
    assert isinstance(train, AssetOrTimeSchedule)
    assert isinstance(train.timetable, CronTriggerTimetable) and train.timetable.expression == "0 0 1 * *"
    assert train.asset_condition.name == "mlbatch.device_gender.labels"
    announce = dagbag.dags["device_gender__labels"].get_task("announce_labels")
    assert [o.name for o in announce.outlets] == ["mlbatch.device_gender.labels"]


def test_gpu_jobs_use_the_pool_one_slot_per_gpu(dagbag):
    train = dagbag.dags["device_gender__train"].get_task("train")
    assert (train.pool, train.pool_slots) == ("mlbatch_gpu", 1)
    # Scoring is sized for CPU by default (score.resources.gpu: 0): it never queues for a GPU slot.
    assert dagbag.dags["device_gender__score"].get_task("score").pool == "default_pool"
    # A publish takes the app DB's pool (every shared pool is on by default), never a GPU slot.
    assert dagbag.dags["device_gender__score"].get_task("publish").pool == "mlbatch_appdb"


def test_pool_follows_each_jobs_own_gpu_count(tmp_path):
    from mlbatch.airflow.dag_factory import score_dag, train_dag
    from mlbatch.spec import load_spec

    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["train"]["resources"] = {"gpu": 0, "vcpu": 8, "memory_gib": 32}
    raw["score"]["resources"] = {"gpu": 2}
    path = tmp_path / "device_gender.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    assert train_dag(spec).get_task("train").pool == "default_pool"
    score = score_dag(spec)
    assert (score.get_task("score").pool, score.get_task("score").pool_slots) == ("mlbatch_gpu", 2)
    assert "2 GPU, 4 vCPU, 8 GiB; pool `mlbatch_gpu` (2 slot(s) per job)" in score.doc_md


def test_params_are_validated(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["device_gender__score"].params)
    params["model_version"] = "20261122-aa1f212b"
    params.validate()
    with pytest.raises(ParamValidationError):
        params["model_version"] = "no spaces allowed; really"
    with pytest.raises(ParamValidationError):
        params["dry_run"] = "yes"


def test_doc_md_names_owner_sources_gates_schedule_and_params(dagbag):
    doc = dagbag.dags["device_gender__train"].doc_md
    for text in (
        "ml-team",
        "sql/redshift/device_gender/training.sql",
        "roc_auc >= 0.75",
        "`@monthly`",
        "mlbatch.device_gender.labels",
        "force_retrain",
        "dry_run",
        "mlbatch_gpu",
        "mlbatch_alerts",
    ):
        assert text in doc, text
    assert "skipped in a dry run" in dagbag.dags["device_gender__score"].get_task("publish").doc_md
