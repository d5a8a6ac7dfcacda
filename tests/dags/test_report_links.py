"""Every task that writes a report has a "Report" button, and the button leads to the plugin's
report view (the view itself is driven in a browser in the stack test)."""

from __future__ import annotations

from types import SimpleNamespace

from airflow.serialization.serialized_objects import DagSerialization
from mlbatch.airflow import ui
from mlbatch.airflow.dag_factory import score_dag, train_dag
from mlbatch.spec import load_spec

from tests.support.paths import REPO


def test_report_writers_carry_the_report_link() -> None:
    spec = load_spec(REPO / "dags" / "specs" / "device_gender.yaml")
    links = {}
    for dag in (train_dag(spec), score_dag(spec)):
        for task in DagSerialization.to_dict(dag)["dag"]["tasks"]:
            var = task["__var"]
            if "_operator_extra_links" in var:
                links[f"{dag.dag_id}.{var['task_id']}"] = var["_operator_extra_links"]
    assert links == {
        "device_gender__train.model_gate": {"Report": "_link_ReportLink"},
        "device_gender__score.publish": {"Report": "_link_ReportLink"},
    }


def test_the_link_is_the_plugin_view_of_that_task_instance() -> None:
    key = SimpleNamespace(
        dag_id="device_gender__train",
        run_id="asset_triggered__2026-12-03T07:00:00+00:00_x",
        task_id="model_gate",
        map_index=-1,
    )
    assert ui.ReportLink().get_link(None, ti_key=key) == (
        "/mlbatch/reports/device_gender__train/asset_triggered__2026-12-03T07%3A00%3A00%2B00%3A00_x/model_gate"
    )


def test_the_plugin_mounts_the_view() -> None:
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        plugin = importlib.import_module("mlbatch_plugin").MlbatchPlugin
    finally:
        sys.path.remove(str(REPO / "plugins"))
    [app] = plugin.fastapi_apps
    assert app["url_prefix"] == "/mlbatch"
    assert any(getattr(r, "path", "") == "/reports/{dag_id}/{run_id}/{task_id}" for r in app["app"].routes)
