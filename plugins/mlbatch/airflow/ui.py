"""Run reports one click away in the Airflow UI.

A task that writes a report (``model_gate``: the version's ``report.html``; the score DAG's run
report) gets a **Report** button among its extra links. The button opens
``/mlbatch/reports/<dag_id>/<run_id>/<task_id>`` on the API server, a view of the mlbatch plugin
(``plugins/mlbatch_plugin.py``) that checks the signed-in user may read that DAG, finds the
report the task recorded, and streams it from the object store. A bucket's objects are not
browsable and a presigned link expires; this view does neither, and needs no AWS access in the
browser.

The task records the report's URI in its XCom ``mlbatch_report`` and the button's URL in the
link's XCom (Airflow 3 resolves extra links from XCom in the API server): :func:`record`.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

PREFIX = "/mlbatch"
REPORT_XCOM = "mlbatch_report"


def report_path(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    tail = f"?map_index={map_index}" if map_index >= 0 else ""
    return f"{PREFIX}/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/{quote(task_id, safe='')}{tail}"


class ReportLink(BaseOperatorLink):
    """The "Report" button of a task that wrote a report."""

    name = "Report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # Airflow 3 shows the URL the task stored under xcom_key; this is the same URL, for
        # callers that ask the link itself.
        return report_path(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)


def record(context: Any, uri: str) -> None:
    """In the task: remember the report's URI and give the task its Report button."""
    ti = context["ti"]
    ti.xcom_push(key=REPORT_XCOM, value=uri)
    # Relative: the UI resolves it against the address it is served from (a proxy, a load balancer).
    ti.xcom_push(key=ReportLink().xcom_key, value=report_path(ti.dag_id, ti.run_id, ti.task_id, ti.map_index))


def create_app() -> Any:
    """The plugin's FastAPI app (mounted at :data:`PREFIX` by the API server)."""
    # The API server only: the plugin's app, built where Airflow serves it.
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    app = FastAPI(title="mlbatch reports")

    @app.get(
        "/reports/{dag_id}/{run_id}/{task_id}",
        response_class=HTMLResponse,
        dependencies=[Depends(requires_access_dag("GET"))],
    )
    def report(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Response:
        uri = _recorded_uri(dag_id, run_id, task_id, map_index)
        if uri is None:
            raise HTTPException(404, f"{dag_id} / {run_id} / {task_id} recorded no report (it may not have run yet)")
        media = "application/json" if uri.endswith(".json") else "text/html"
        return Response(_read_report(uri), media_type=media)

    return app


def _recorded_uri(dag_id: str, run_id: str, task_id: str, map_index: int) -> str | None:
    # The API server only: the plugin's app, built where Airflow serves it.
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key=REPORT_XCOM, run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    if row is None:
        return None
    value = row.value
    try:
        value = json.loads(value)
    except (TypeError, ValueError):
        pass
    return value if isinstance(value, str) else None


def _read_report(uri: str) -> bytes:
    """The report's bytes, only from this deployment's object store and only a report (HTML, or
    the JSON summary of a scoring run)."""
    # Request time only: the plugin module loads in every Airflow process.
    from fastapi import HTTPException

    # Request time only: the plugin module loads in every Airflow process.
    from mlbatch.backends.env import Environment

    store = Environment.from_env().store
    if not uri.startswith(store.root.rstrip("/") + "/") or not uri.endswith((".html", ".json")):
        log.warning("refusing to serve %s: not a report under %s", uri, store.root)
        raise HTTPException(404, "not a report of this deployment")
    key = store.key(uri)
    if not store.exists(key):
        raise HTTPException(404, f"{uri} is gone (object store retention?)")
    return store.get_bytes(key)
