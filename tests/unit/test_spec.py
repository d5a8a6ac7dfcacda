import pytest
from mlbatch.spec import SpecError, find_spec, load_spec

from tests.support.paths import REPO
from tests.support.specs import write_spec

EXAMPLE = REPO / "dags" / "specs" / "device_gender.yaml"


def test_example_spec_loads_with_resolved_paths():
    spec = load_spec(EXAMPLE)
    assert spec.name == "device_gender"
    assert spec.labels.classes == ["female", "male"]
    assert spec.is_binary and spec.predictions_table == "device_gender_predictions"
    assert spec.resolve(spec.features.training_sql).is_file()


def test_unknown_field_names_file_and_field(tmp_path):
    path = write_spec(tmp_path, lambda r: r["train"]["gate"].update(minimum=0.8))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "train.gate.minimum: unknown field" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda r: r.update(name="Device-Gender"), "name", "pattern"),
        (lambda r: r["labels"].update(max_invalid_fraction=1.5), "labels.max_invalid_fraction", "less than or equal"),
        (lambda r: r["labels"].update(classes=["male", "MALE"]), "labels.classes", "distinct"),
        (lambda r: r["train"].update(family="lightgbm"), "train.family", "xgboost"),
        (lambda r: r["score"].update(schedule="every day"), "score.schedule", "5-field cron"),
        (lambda r: r["entity"].update(key="device id; drop"), "entity.key", "pattern"),
        (lambda r: r.pop("owner"), "owner", "required field is missing"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, mutate, field, words):
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path, mutate))
    assert any(f == field and words in msg for f, msg in err.value.problems), err.value.problems


def test_metric_must_fit_the_number_of_classes(tmp_path):
    path = write_spec(tmp_path, lambda r: r["labels"].update(classes=["a", "b", "c"]))
    with pytest.raises(SpecError, match="roc_auc.*does not fit a multiclass model"):
        load_spec(path)


def test_name_must_match_file_name(tmp_path):
    path = write_spec(tmp_path, lambda r: None, name="other_model")
    with pytest.raises(SpecError, match="must match the file name"):
        load_spec(path)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_find_spec_by_name_or_path(tmp_path):
    assert find_spec("device_gender", EXAMPLE.parent).name == "device_gender"
    assert find_spec(str(EXAMPLE), tmp_path).name == "device_gender"
    with pytest.raises(SpecError):
        find_spec("../etc/passwd", tmp_path)


def test_docs_spec_md_is_rendered_from_the_models():
    from mlbatch.spec.doc import render

    assert (REPO / "docs" / "spec.md").read_text() == render(), (
        "docs/spec.md is stale: python -m mlbatch.spec.doc > docs/spec.md"
    )
    assert "| `max_invalid_fraction` | float | `0.02` |" in render()


def test_score_resources_default_to_cpu_and_reach_the_score_job(tmp_path, monkeypatch):
    from mlbatch.backends.env import Environment
    from mlbatch.stages.context import RunContext
    from mlbatch.stages.score import _score_request

    spec = load_spec(EXAMPLE)
    res = spec.score.resources
    assert (res.gpu, res.vcpu, res.memory_gib) == (0, 4, 8)  # sized for CPU scoring
    assert spec.train.resources.gpu == 1  # the training job keeps its own size

    path = write_spec(tmp_path, lambda r: r["score"].update(resources={"gpu": 1, "memory_gib": 30}))
    monkeypatch.setenv("MLBATCH_HOME", str(tmp_path / "home"))
    ctx = RunContext(env=Environment.from_env(), spec=load_spec(path), ds="2026-11-22", run_id="manual__t")
    ctx.save_state("model", {"artifact_uri": "file:///m", "version": "v1"})
    request = _score_request(ctx, 0, "file:///out/part-0000.parquet")
    assert (request.gpu, request.vcpu, request.memory_gib) == (1, 4, 30)


def test_sql_paths_resolve_from_the_project_dir_not_from_a_sql_folder_near_the_spec(tmp_path, monkeypatch):
    # A deployment keeps specs where it likes: a sql/ folder that happens to sit above the spec
    # is not the project (the old rule took the first parent holding sql/).
    decoy = tmp_path / "elsewhere"
    (decoy / "sql" / "redshift" / "device_gender").mkdir(parents=True)
    (decoy / "specs").mkdir()
    monkeypatch.delenv("MLBATCH_PROJECT_DIR", raising=False)
    spec = load_spec(write_spec(decoy / "specs", lambda r: None))
    assert spec.root == REPO
    assert spec.resolve(spec.features.training_sql) == REPO / "sql" / "redshift" / "device_gender" / "training.sql"

    project = tmp_path / "project"
    query = project / "sql" / "redshift" / "device_gender" / "training.sql"
    query.parent.mkdir(parents=True)
    query.write_text("SELECT 1 AS device_id WHERE '{{ ds }}' = '{{ ds }}'")
    query.with_name("scoring.sql").write_text("SELECT 1 AS device_id")  # the spec checks both exist
    monkeypatch.setenv("MLBATCH_PROJECT_DIR", str(project))
    spec = load_spec(write_spec(decoy / "specs", lambda r: None))
    assert spec.resolve(spec.features.training_sql) == query

    from mlbatch.backends.warehouse.sql import render_spec_query

    assert "2026-11-22" in render_spec_query(spec, "training", "2026-11-22")


def test_the_cli_finds_specs_under_the_project_dir(tmp_path, monkeypatch):
    from mlbatch.backends.env import Environment

    monkeypatch.delenv("MLBATCH_SPECS_DIR", raising=False)
    monkeypatch.setenv("MLBATCH_PROJECT_DIR", str(tmp_path))
    assert Environment.from_env().specs_dir == tmp_path.resolve() / "dags" / "specs"


def test_a_missing_sql_file_is_a_load_error_naming_spec_field_and_path(tmp_path):
    path = write_spec(tmp_path, lambda r: r["features"].update(scoring_sql="sql/redshift/device_gender/scorng.sql"))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message and "features.scoring_sql: no such file" in message
    assert str(REPO / "sql" / "redshift" / "device_gender" / "scorng.sql") in message
    assert "features.training_sql" not in message  # the other query is fine


def test_a_template_error_is_a_load_error_naming_the_sql_file_and_line(tmp_path):
    query = tmp_path / "training.sql"
    query.write_text("SELECT device_id\nFROM analytics.devices\nWHERE n > {{ params.min_sessions }}\n")
    path = write_spec(tmp_path, lambda r: r["features"].update(training_sql=str(query)))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message and "features.training_sql: does not render for a sample day" in message
    assert f"{query}, line 3" in message and "min_sessions" in message


def test_an_unsafe_parameter_is_a_load_error(tmp_path):
    """The templates' value checks run at load too: a non-number where the SQL wants one."""
    path = write_spec(tmp_path, lambda r: r["features"]["params"].update(lookback_days="30; DROP TABLE x"))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "features.scoring_sql" in str(
        err.value
    ) and "sqlnum expects a number, got the string '30; DROP TABLE x'" in str(err.value)
