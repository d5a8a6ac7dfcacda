"""A real Airflow stack (API server, scheduler, DAG processor; LocalExecutor on SQLite) on a
temporary embedded mlbatch stack: a 3-day backfill through the REST API, a dry run from the
trigger form's params, and a headless Chromium screenshot of the DAG's grid page.

One stack is started per module and shared by the tests (start-up is most of the cost).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlbatch.pools import GPU_POOL, gpu_pool_slots

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"
DAG_ID = "device_gender__score"
TRAIN_DS = "2026-11-22"
BACKFILL_DAYS = ["2026-11-20", "2026-11-21", "2026-11-22"]
DRY_RUN_DS = "2026-11-19"
DRY_RUN_ID = "dry_run_test"
WAIT_S = 240


@dataclass
class Stack:
    home: Path
    url: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen]

    def client(self) -> httpx.Client:
        token = httpx.get(f"{self.url}/auth/token", timeout=10).json()["access_token"]
        return httpx.Client(base_url=f"{self.url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def logs(self) -> str:
        out = []
        for name in self.procs:
            text = (self.home / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name} (last 3000 chars) ---\n{text[-3000:]}")
        return "\n".join(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLBATCH_", "AIRFLOW_CONN_"))}
    url = f"http://127.0.0.1:{port}"
    env.update(
        MLBATCH_HOME=str(home),
        AIRFLOW_HOME=str(REPO),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "airflow" / "logs"),
        AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY=str(home / "airflow" / "logs" / "dag_processor"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="3",  # the test machine has 2 cores
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
        # Only the runs the test creates: unpausing must not also start today's scheduled run.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    )
    return env


def _run(env: dict[str, str], *cmd: str, timeout: int = 300) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


# Warehouse + label sheet, then the labels and training steps of TRAIN_DS (the code `mlbatch run`
# runs, in one process, without the scoring unload): a production model exists afterwards.
PREPARE = f"""
from mlbatch.demo import prepare
from mlbatch.env import Environment
from mlbatch.spec import load_all, load_spec
from mlbatch.stages import steps
from mlbatch.stages.context import RunContext
env = Environment.from_env()
prepare(env, load_all(env.specs_dir))
ctx = RunContext(env=env, spec=load_spec(env.specs_dir / "device_gender.yaml"), ds="{TRAIN_DS}", run_id="cli__prep")
for name, thunk in steps(ctx, ["labels", "unload", "train"]):
    if name != "unload_scoring":
        print(name, thunk(), flush=True)
"""


def _prepare_embedded_stack(env: dict[str, str]) -> None:
    _run(env, sys.executable, "-c", PREPARE)


def _wait(what: str, check, stack: Stack | None = None, timeout: float = WAIT_S, every: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        if stack:
            dead = {n: p.returncode for n, p in stack.procs.items() if p.poll() is not None}
            assert not dead, f"Airflow components exited: {dead}\n{stack.logs()}"
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}\n{stack.logs() if stack else ''}"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("airflow_stack")
    (home / "airflow").mkdir()
    port = _free_port()
    env = _env(home, port)
    _run(env, sys.executable, "-m", "airflow", "db", "migrate")
    procs: dict[str, subprocess.Popen] = {}
    st = Stack(home, f"http://127.0.0.1:{port}", env, procs)
    try:
        for name in ("api-server", "dag-processor", "scheduler"):
            log = open(home / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown stops its workers too
            )
        _prepare_embedded_stack(env)  # while the components start
        _wait("the API server", lambda: httpx.get(f"{st.url}/api/v2/monitor/health", timeout=5).is_success, st)
        with st.client() as api:  # the GPU pool the train and score tasks use (`make airflow`: mlbatch.pools)
            r = api.post("/pools", json={"name": GPU_POOL, "slots": gpu_pool_slots(), "include_deferred": False})
            assert r.status_code in (200, 201), r.text
        yield st
    finally:
        for p in procs.values():
            _stop_group(p, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _stop_group(p, signal.SIGKILL)
                p.wait(timeout=10)


def _stop_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # the group this fixture created for the component
    except ProcessLookupError:
        pass


def _dag_runs(api: httpx.Client, **params) -> list[dict]:
    r = api.get(f"/dags/{DAG_ID}/dagRuns", params={"limit": 100, **params})
    r.raise_for_status()
    return r.json()["dag_runs"]


def _task_states(api: httpx.Client, run_id: str) -> dict[str, str]:
    r = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    r.raise_for_status()
    return {ti["task_id"]: ti["state"] for ti in r.json()["task_instances"]}


def _appdb(home: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(home / "app.db") as db:
        return db.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def runs(stack) -> dict:
    """Created together, run side by side: a 3-day backfill of the score DAG through the REST API
    (newest day first) and a dry run triggered with the ``dry_run`` param."""
    with stack.client() as api:
        _wait("the score DAG to be parsed", lambda: api.get(f"/dags/{DAG_ID}").is_success, stack)
        r = api.patch(f"/dags/{DAG_ID}", json={"is_paused": False})  # the scheduler runs unpaused DAGs only
        assert r.is_success, r.text
        r = api.post(
            "/backfills",
            json={
                "dag_id": DAG_ID,
                "from_date": f"{BACKFILL_DAYS[0]}T00:00:00Z",
                "to_date": f"{BACKFILL_DAYS[-1]}T00:00:00Z",
                "run_backwards": True,  # the newest day publishes first: older days must not overwrite it
                "max_active_runs": 2,
                "reprocess_behavior": "none",
            },
        )
        assert r.status_code in (200, 201), r.text
        backfill = r.json()
        r = api.post(
            f"/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": DRY_RUN_ID, "logical_date": f"{DRY_RUN_DS}T00:00:00Z", "conf": {"dry_run": True}},
        )
        assert r.status_code in (200, 201), r.text
    return {"backfill": backfill}


def _finished(api: httpx.Client, runs: list[dict], expected: int, stack: Stack) -> list[dict] | None:
    failed = [x["dag_run_id"] for x in runs if x["state"] == "failed"]
    assert not failed, (failed, {rid: _task_states(api, rid) for rid in failed}, stack.logs())
    return runs if len(runs) == expected and all(x["state"] == "success" for x in runs) else None


@pytest.fixture(scope="module")
def backfill(stack, runs) -> dict:
    with stack.client() as api:
        done = _wait(
            "the backfill's runs to succeed",
            lambda: _finished(api, _dag_runs(api, run_type="backfill"), len(BACKFILL_DAYS), stack),
            stack,
            every=3,
        )
        completed = _wait(
            "the backfill to be marked completed",
            lambda: (b := api.get(f"/backfills/{runs['backfill']['id']}").json())["completed_at"] and b,
            stack,
        )
    return {"runs": done, "backfill": completed}


def test_rest_backfill_scores_three_days_and_keeps_the_newest(stack, backfill):
    assert sorted(r["logical_date"][:10] for r in backfill["runs"]) == BACKFILL_DAYS
    assert backfill["backfill"]["completed_at"] is not None
    log = _appdb(stack.home, "SELECT ds, rows_published, model_version FROM ml_publish_log ORDER BY ds")
    assert [ds for ds, _, _ in log] == BACKFILL_DAYS
    (production,) = _appdb(stack.home, "SELECT version FROM ml_model_versions WHERE status = 'production'")
    assert {v for _, _, v in log} == set(production)  # the backfill reused the production model
    assert all(rows > 1000 for _, rows, _ in log)
    # One row per entity, holding its newest day: the older days (published later) did not win.
    newest_rows = log[-1][1]
    per_day = dict(_appdb(stack.home, "SELECT ds, count(*) FROM device_gender_predictions GROUP BY ds"))
    assert per_day.get(BACKFILL_DAYS[-1]) == newest_rows, per_day
    [(rows, keys)] = _appdb(stack.home, "SELECT count(*), count(DISTINCT entity_key) FROM device_gender_predictions")
    assert rows == keys
    # Each day has its scoring summary.
    for ds in BACKFILL_DAYS:
        assert (stack.home / "objects" / "predictions" / "device_gender" / ds / "summary.json").exists()


def test_dry_run_param_runs_the_gates_and_writes_nothing(stack, runs, backfill):
    with stack.client() as api:
        _wait(
            "the dry run to succeed",
            lambda: _finished(api, [x for x in _dag_runs(api) if x["dag_run_id"] == DRY_RUN_ID], 1, stack),
            stack,
        )
        states = _task_states(api, DRY_RUN_ID)
    for gate in ("features_gate", "predictions_gate"):
        assert states[gate] == "success", states
    for task in ("publish", "export", "export_gate"):
        assert states[task] == "skipped", states
    published = [ds for (ds,) in _appdb(stack.home, "SELECT ds FROM ml_publish_log ORDER BY ds")]
    assert DRY_RUN_DS not in published
    assert not (stack.home / "objects" / "predictions" / "device_gender" / DRY_RUN_DS / "summary.json").exists()
    wh = stack.home / "objects" / "export" / "device_gender" / DRY_RUN_DS
    assert not wh.exists()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=True,
        capture_output=True,
        timeout=600,
    )
    return shutil.which("chromium") or "chromium"


def test_grid_page_renders_our_dag_in_headless_chromium(stack, backfill, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "airflow_grid_device_gender__score.png"
    shot.unlink(missing_ok=True)
    # The all-admins login sets the token cookie, then redirects to the DAG's grid.
    page = f"{stack.url}/auth/token/login?next={stack.url}/dags/{DAG_ID}"
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--window-size=1440,900",
            "--virtual-time-budget=15000",  # let the React UI fetch and render before the shot
            f"--screenshot={shot}",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stdout + proc.stderr
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000, f"{shot} is only {len(data)} bytes: a blank page?"
    # The page the browser rendered came from our DAG (the same URL through the API, as a check).
    with stack.client() as api:
        dag = api.get(f"/dags/{DAG_ID}").json()
    assert dag["dag_id"] == DAG_ID and "ml-team" in dag["owners"]
