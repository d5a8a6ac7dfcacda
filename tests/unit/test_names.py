"""mlbatch.names: every key and table name, pinned to the strings the code wrote before it existed
(existing buckets and databases hold them), and a guard that no other module builds them again."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlbatch import names

from tests.support.paths import REPO

MODEL, DS, RUN_ID, VERSION, SYNC = (
    "device_gender",
    "2026-11-22",
    "scheduled__2026-11-22T00:00:00+00:00",
    "20261122-abcdef12",
    "device_gender-20261122T030000-71bbca",
)
RUN_KEY = "scheduled__2026-11-22T0000000000-71bbca"


@pytest.mark.parametrize(
    ("run_id", "key"),
    [
        (RUN_ID, RUN_KEY),
        ("manual__2026-11-22T10:15:30.123456+00:00", "manual__2026-11-22T101530.1234560000-a3b21b"),
        ("cli__2026-11-22", "cli__2026-11-22-be9002"),
        ("a/b c" * 20, "abc" * 20 + "-1df9f3"),  # unsafe characters dropped, 60 kept, then the hash
    ],
)
def test_run_key(run_id: str, key: str) -> None:
    assert names.run_key(run_id) == key


def test_object_keys() -> None:
    assert {
        "labels_snapshot_key": names.labels_snapshot_key(MODEL, SYNC),
        "staged_labels_key": names.staged_labels_key(MODEL, SYNC),
        "unload_prefix": names.unload_prefix(MODEL, "train", DS, RUN_KEY),
        "manifest_key": names.manifest_key(MODEL, "score", DS, RUN_KEY),
        "model_prefix": names.model_prefix(MODEL, VERSION),
        "predictions_prefix": names.predictions_prefix(MODEL, DS, RUN_KEY),
        "shard_key": names.shard_key(MODEL, DS, RUN_KEY, 12),
        "summary_key": names.summary_key(MODEL, DS),
        "runs_prefix": names.runs_prefix(MODEL, DS),
        "run_prefix": names.run_prefix(MODEL, DS, RUN_KEY),
        "state_key": names.state_key(MODEL, DS, RUN_KEY, "model"),
        "publish_prefix": names.publish_prefix(MODEL, DS, RUN_KEY),
        "publish_share_key": names.publish_share_key(MODEL, DS, RUN_KEY, 3),
        "export_prefix": names.export_prefix(MODEL, DS),
        "export_key": names.export_key(MODEL, DS),
        "costs_prefix": names.costs_prefix(MODEL, "2026-11"),
        "cost_key": names.cost_key(MODEL, "2026-11", "train", RUN_KEY),
        "realized_state_key": names.realized_state_key(MODEL),
        "realized_day_key": names.realized_day_key(MODEL, DS),
        "last_training_key": names.last_training_key(MODEL),
        "model_folder": names.model_folder(names.MODELS_ROOT, MODEL),
    } == {
        "labels_snapshot_key": "labels/device_gender/device_gender-20261122T030000-71bbca.parquet",
        "staged_labels_key": "labels/device_gender/staged/device_gender-20261122T030000-71bbca.parquet",
        "unload_prefix": "unload/device_gender/train/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/",
        "manifest_key": "unload/device_gender/score/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/manifest",
        "model_prefix": "models/device_gender/20261122-abcdef12/",
        "predictions_prefix": "predictions/device_gender/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/",
        "shard_key": "predictions/device_gender/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/part-0012.parquet",
        "summary_key": "predictions/device_gender/2026-11-22/summary.json",
        "runs_prefix": "runs/device_gender/2026-11-22/",
        "run_prefix": "runs/device_gender/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/",
        "state_key": "runs/device_gender/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/model.json",
        "publish_prefix": "publish/device_gender/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/",
        "publish_share_key": (
            "publish/device_gender/2026-11-22/scheduled__2026-11-22T0000000000-71bbca/predictions-003.tsv"
        ),
        "export_prefix": "export/device_gender/2026-11-22/",
        "export_key": "export/device_gender/2026-11-22/part-0000.parquet",
        "costs_prefix": "costs/device_gender/2026-11/",
        "cost_key": "costs/device_gender/2026-11/train-scheduled__2026-11-22T0000000000-71bbca.json",
        "realized_state_key": "realized/device_gender/state.json",
        "realized_day_key": "realized/device_gender/days/2026-11-22.parquet",
        "last_training_key": "retrain/device_gender/last_training.json",
        "model_folder": "models/device_gender/",
    }


def test_roots_are_the_first_segment_of_every_key() -> None:
    roots = {
        names.LABELS_ROOT: "labels/",
        names.UNLOAD_ROOT: "unload/",
        names.MODELS_ROOT: "models/",
        names.PREDICTIONS_ROOT: "predictions/",
        names.RUNS_ROOT: "runs/",
        names.EXPORT_ROOT: "export/",
        names.PUBLISH_ROOT: "publish/",
        names.COSTS_ROOT: "costs/",
        names.REALIZED_ROOT: "realized/",
        names.RETRAIN_ROOT: "retrain/",
    }
    assert all(root == literal for root, literal in roots.items()) and len(roots) == 10
    assert names.MANIFEST == "manifest"


def test_table_names() -> None:
    assert names.predictions_table(MODEL) == "device_gender_predictions"
    assert names.history_table(MODEL) == "device_gender_history"
    assert names.export_table(MODEL) == "ml_exports.device_gender_predictions"
    assert names.EXPORT_SCHEMA == "ml_exports"
    assert names.model_of_predictions_table("device_gender_predictions") == MODEL
    assert [
        names.LABELS_TABLE,
        names.LABEL_SYNCS_TABLE,
        names.LABEL_HISTORY_TABLE,
        names.MODEL_VERSIONS_TABLE,
        names.PUBLISH_LOG_TABLE,
        names.REALIZED_PERFORMANCE_TABLE,
        names.MODEL_FLAGS_TABLE,
    ] == [
        "ml_labels",
        "ml_label_syncs",
        "ml_label_history",
        "ml_model_versions",
        "ml_publish_log",
        "ml_realized_performance",
        "ml_model_flags",
    ]


def test_the_app_db_schema_uses_the_same_names() -> None:
    """appdb.schema still spells its tables itself: they must stay the names here."""
    from mlbatch.backends.appdb import schema

    assert {t.name for t in schema.metadata.sorted_tables} == {
        names.LABELS_TABLE,
        names.LABEL_SYNCS_TABLE,
        names.LABEL_HISTORY_TABLE,
        names.MODEL_VERSIONS_TABLE,
        names.PUBLISH_LOG_TABLE,
        names.REALIZED_PERFORMANCE_TABLE,
        names.MODEL_FLAGS_TABLE,
    }
    predictions = schema.predictions_table(MODEL, "integer")
    assert predictions.name == names.predictions_table(MODEL)
    assert schema.history_table(MODEL, "string").name == schema.history_for(predictions).name
    assert schema.history_for(predictions).name == names.history_table(MODEL)


def test_a_run_context_names_its_keys_here() -> None:
    from mlbatch.spec import load_spec
    from mlbatch.stages.context import RunContext

    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    ctx = RunContext(env=SimpleNamespace(), spec=spec, ds=DS, run_id=RUN_ID)  # type: ignore[arg-type]
    assert ctx.run_key == RUN_KEY
    assert ctx.unload_prefix("score") == names.unload_prefix(MODEL, "score", DS, RUN_KEY)
    assert ctx.manifest_key("train") == names.manifest_key(MODEL, "train", DS, RUN_KEY)
    assert ctx.predictions_prefix() == names.predictions_prefix(MODEL, DS, RUN_KEY)
    assert ctx.shard_key(0) == names.shard_key(MODEL, DS, RUN_KEY, 0)
    assert ctx.run_prefix() == names.run_prefix(MODEL, DS, RUN_KEY)
    assert ctx.state_key("run") == names.state_key(MODEL, DS, RUN_KEY, "run")
    assert spec.predictions_table == names.predictions_table(MODEL)


# --- the guard: no module but names.py builds a key or a table name ---------------------------------

_ROOTS = "labels|unload|models|predictions|runs|export|publish|costs|realized|retrain"
# Searched in the code's string literals (docstrings and comments are prose and are skipped), with
# each f-string placeholder shown as {}: f"runs/{ctx.model}/" is seen as "runs/{}/".
BUILDERS = {
    # A key that starts with a root folder, at the start or after a placeholder (f"{root}/export/...").
    "key": re.compile(rf"(^|\{{\}}/)({_ROOTS})/"),
    # A key's tail: a shard, a publish share, a summary or a state file.
    "key tail": re.compile(r"part-\{\}\.parquet|predictions-\{\}\.tsv|/(summary|state|last_training)\.json$"),
    # A per-model table: f"{model}_predictions", f"{model}_history", and the suffix spelled alone.
    "table": re.compile(r"\{\}_(predictions|history)\b|^_(predictions|history)$"),
    # The warehouse's export schema and the app DB's shared tables, in a name or in SQL text.
    "fixed table": re.compile(
        r"\bml_(exports|labels|label_syncs|label_history|model_versions|publish_log|realized_performance|model_flags)\b"
    ),
}
SCANNED = ("plugins/mlbatch", "devtools")
# Places that still build a name themselves, each with the reason. appdb/, warehouse/ and env.py
# were being changed by others when names.py came: switch them to it, then drop their entries.
ALLOWED = {
    (
        "plugins/mlbatch/backends/appdb/schema.py",
        "table",
        "{}_predictions",
    ): "to be switched to names.predictions_table",
    ("plugins/mlbatch/backends/appdb/schema.py", "table", "{}_history"): "to be switched to names.history_table",
    (
        "plugins/mlbatch/backends/appdb/schema.py",
        "table",
        "_predictions",
    ): "to be switched to names.model_of_predictions_table",
    ("plugins/mlbatch/backends/appdb/schema.py", "fixed table", "ml_labels"): "to be switched to names.LABELS_TABLE",
    ("plugins/mlbatch/backends/appdb/schema.py", "fixed table", "ml_label_syncs"): "to be switched to names.*_TABLE",
    ("plugins/mlbatch/backends/appdb/schema.py", "fixed table", "ml_label_history"): "to be switched to names.*_TABLE",
    ("plugins/mlbatch/backends/appdb/schema.py", "fixed table", "ml_model_versions"): "to be switched to names.*_TABLE",
    ("plugins/mlbatch/backends/appdb/schema.py", "fixed table", "ml_publish_log"): "to be switched to names.*_TABLE",
    (
        "plugins/mlbatch/backends/appdb/schema.py",
        "fixed table",
        "ml_realized_performance",
    ): "to be switched to names.*_TABLE",
    ("plugins/mlbatch/backends/appdb/schema.py", "fixed table", "ml_model_flags"): "to be switched to names.*_TABLE",
    (
        "plugins/mlbatch/backends/appdb/mysql_publish.py",
        "key",
        "publish/{}/{}/{}/",
    ): "to be switched to names.publish_prefix",
    ("plugins/mlbatch/backends/appdb/mysql_publish.py", "key tail", "{}predictions-{}.tsv"): "names.publish_share_key",
    ("plugins/mlbatch/backends/appdb/mysql_publish.py", "table", "_predictions"): "names.model_of_predictions_table",
    # Not a name: an injection attempt in a synthetic sheet cell.
    ("devtools/synth.py", "fixed table", "'; DROP TABLE ml_labels; --"): "test data, not a table name",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that stand alone as statements (docstrings, block comments)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _strings(tree: ast.AST) -> list[str]:
    """Every string literal of the code as written: an f-string with its placeholders as {}."""
    skip, found = _docstrings(tree), []
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip and id(node) not in inner:
                found.append(node.value)
    return found


def builders() -> set[tuple[str, str, str]]:
    """(file, kind, string) of each string literal outside names.py that looks like a name being built."""
    found = set()
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel == "plugins/mlbatch/names.py":
                continue
            for text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
                found |= {(rel, kind, _shown(text)) for kind, pattern in BUILDERS.items() if pattern.search(text)}
    return found


def _shown(text: str) -> str:
    """A long literal (SQL, prose) by the start of its first line, so the allow-list stays readable."""
    return text.splitlines()[0][:60] if text else text


def _hits(line: str) -> list[str]:
    return [kind for t in _strings(ast.parse(line)) for kind, pattern in BUILDERS.items() if pattern.search(t)]


@pytest.mark.parametrize(
    "line",
    [
        'k = f"predictions/{model}/{ds}/summary.json"',
        'p = f"{root}/unload/{m}/{purpose}/{ds}/<run>/"',
        'table = f"ml_exports.{spec.name}_predictions"',
        't = f"{name}_history"',
        'm = name.removesuffix("_predictions")',
        's = f"{prefix}part-{shard:04d}.parquet"',
        'q = "DELETE FROM ml_publish_log"',
        'x = {"costs/": "per-run cost lines"}',
    ],
)
def test_the_guard_finds_a_name_built_by_hand(line: str) -> None:
    assert _hits(line)


@pytest.mark.parametrize(
    "line",
    [
        '"""Writes ``predictions/<model>/<ds>/summary.json`` and ``ml_publish_log``."""',
        'log.info("%s: published %d predictions for %s", m, n, ds)',
        'url = f"/reports/{dag_id}/{run_id}/{task_id}"',
        'path = work / "manifest"',
        'out.to_sql("bench_naive_predictions", engine)',
        "key = names.summary_key(model, ds)",
    ],
)
def test_the_guard_leaves_prose_and_other_names_alone(line: str) -> None:
    assert not _hits(line)


def test_only_names_py_builds_keys_and_table_names() -> None:
    unexpected = sorted(builders() - ALLOWED.keys())
    assert not unexpected, "build these in mlbatch.names (or allow them in ALLOWED, saying why):\n" + "\n".join(
        map(str, unexpected)
    )


def test_names_py_imports_nothing_heavy() -> None:
    """names.py is imported on every DAG parse and by every layer: the standard library only."""
    tree = ast.parse((Path(names.__file__)).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "hashlib", "re"}
