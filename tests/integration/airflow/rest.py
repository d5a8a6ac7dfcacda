"""What the stack tests ask Airflow's REST API and the app DB, as an engineer or the scheduler would."""

from __future__ import annotations

from typing import Any

from tests.integration.airflow.airflow_stack import Stack


def runs(api, dag_id: str, **params: Any) -> list[dict]:
    r = api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})
    r.raise_for_status()
    return r.json()["dag_runs"]


def task_states(api, dag_id: str, run_id: str) -> dict[str, str]:
    r = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    r.raise_for_status()
    return {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
        for ti in r.json()["task_instances"]
    }


def trigger(api, dag_id: str, **body: Any) -> dict:
    r = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, **body})
    assert r.status_code in (200, 201), r.text
    return r.json()


def succeeded(api, dag_id: str, run_ids: list[str]) -> list[dict] | None:
    """The runs once all succeeded; None while any is unfinished; fails at the first failed one."""
    found = {r["dag_run_id"]: r for r in runs(api, dag_id) if r["dag_run_id"] in run_ids}
    failed = [rid for rid, r in found.items() if r["state"] == "failed"]
    assert not failed, {rid: task_states(api, dag_id, rid) for rid in failed}
    if len(found) == len(run_ids) and all(r["state"] == "success" for r in found.values()):
        return list(found.values())
    return None


def appdb_rows(stack: Stack, sql: str, **params: Any) -> list[tuple]:
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.appdb_url)  # straight to MariaDB, as the test's own user
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()
