"""A production-shaped Airflow stack for the stack tests, started and stopped by them.

Airflow 3.3 as teams deploy it: the API server, scheduler, DAG processor and triggerer, and the
CeleryExecutor with Redis as broker and TWO workers, each in its own working directory with its
own ``MLBATCH_HOME`` and log folder (so nothing may pass between tasks through a local file);
PostgreSQL as the metadata DB. mlbatch's boundaries: moto's S3 server (object store), MariaDB
(the app DB), the Docker launcher (jobs in real containers), the Sheets API double (labels,
through gspread and a service-account key in the Google connection), the embedded warehouse
(DuckDB; Redshift cannot run here). Every credential is a canary: a unique value that must never
appear in any log.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.paths import REPO

SHEET_KEY = "1StackLabelSheet_abcdefghijklmnop"
MODEL = "device_gender"
SLOW = "slow_gender"  # the same data, trained for ever: for the stop and timeout tests
USER = "alice"  # the engineer who signs into the UI (and whose token drives the REST API)
WAIT_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def today() -> date:
    return datetime.now(UTC).date()


@dataclass
class Canaries:
    """One secret per credential the stack uses; none may ever be logged."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        t = self.tag
        self.aws_secret = f"canaryAwsSecret{t}"
        self.appdb_password = f"canaryAppDb{t}"
        self.metadb_password = f"canaryMetaDb{t}"
        self.redis_password = f"canaryRedis{t}"
        self.webhook_token = f"canaryHook{t}"
        self.webhook_header = f"Bearer canaryHeader{t}"
        self.google_key_id = f"canaryGoogleKey{t}"
        self.ui_password = f"canaryUi{t}"  # the engineer's password for the Airflow UI and API

    def values(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if k != "tag"}


def write_dags(folder: Path) -> None:
    """The stack's DAG folder: device_gender's DAG file and spec with its labels in the Sheets
    double and promotions approved by a person, and slow_gender (same data, a training job that
    never ends, 1-minute timeout)."""
    specs = folder / "specs"
    specs.mkdir(parents=True)
    base = yaml.safe_load((REPO / "dags" / "specs" / f"{MODEL}.yaml").read_text())
    for name in (MODEL, SLOW):
        spec = json.loads(json.dumps(base))
        spec["name"] = name
        spec["labels"]["source"] = {"sheet": SHEET_KEY, "worksheet": name, "conn_id": "google_cloud_default"}
        spec["labels"]["schedule"] = None  # the tests trigger syncs; an hourly run would race them
        for query in ("training_sql", "scoring_sql"):
            spec["features"][query] = str(REPO / base["features"][query])
        spec["train"]["schedule"] = None  # trained when labels change (asset events) only
        spec["train"]["resources"] = {"gpu": 0, "vcpu": 1, "memory_gib": 2}  # no GPU here
        spec["score"]["resources"] = {"gpu": 0, "vcpu": 1, "memory_gib": 2}  # two shards side by side on 2 cores
        if name == MODEL:
            spec["train"]["approval"] = {"required": True, "timeout_hours": 1}  # a person approves in the UI
        if name == SLOW:
            # Boosting rounds without end on half a core: a job that is still running when the
            # tests stop it, and that a 1-minute timeout cuts short.
            spec["train"]["params"] = {
                "n_estimators": 1_000_000,
                "early_stopping_rounds": 1_000_000,
                "learning_rate": 0.0001,
                "max_depth": 8,
            }
            spec["train"]["resources"] = {"gpu": 0, "vcpu": 0.5, "memory_gib": 1}
            spec["train"]["timeout_minutes"] = 1
            spec["labels"]["write_back"] = None
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        shutil.copy(REPO / "dags" / f"{MODEL}.py", folder / f"{name}.py")


@dataclass
class Stack:
    home: Path
    url: str
    env: dict[str, str]
    ui_password: str
    appdb_url: str = ""  # the app DB with its password, for the tests' own reads
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        log = self.home / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.procs[name] = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() takes its children too
            )
        self.logs[name] = log

    def stop(self) -> None:
        for p in self.procs.values():
            _signal_group(p, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(timeout=10)

    def tail(self, chars: int = 2500) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"--- {name} (last {chars} chars) ---\n{text[-chars:]}")
        return "\n".join(out)

    def client(self) -> httpx.Client:
        """A REST client signed in as the stack's user (the simple auth manager's token)."""
        r = httpx.post(f"{self.url}/auth/token", json={"username": USER, "password": self.ui_password}, timeout=10)
        r.raise_for_status()
        token = r.json()["access_token"]
        return httpx.Client(base_url=f"{self.url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = WAIT_S, every: float = 2.0) -> Any:
        """Poll ``check`` until it returns something truthy; fail with the components' logs."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                last = exc
            else:
                if last:
                    return last
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            assert not dead, f"Airflow components exited: {dead}\n{self.tail()}"
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}\n{self.tail()}")


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def run(env: dict[str, str], *cmd: str, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def airflow_env(
    home: Path, port: int, dags: Path, pg_url: str, broker: str, backend: str, ui_password: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLBATCH_", "AIRFLOW_CONN_"))}
    url = f"http://127.0.0.1:{port}"
    # One signed-in user, as on a team's deployment: who approves a promotion is recorded by name.
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: ui_password}))
    passwords.chmod(0o600)
    env.update(
        AIRFLOW_HOME=str(REPO),  # the repo's airflow.cfg; everything below overrides it
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CORE__PARALLELISM="8",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",  # the repo's airflow.cfg says True (make airflow)
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_url,
        AIRFLOW__CELERY__BROKER_URL=broker,
        AIRFLOW__CELERY__RESULT_BACKEND=backend,
        AIRFLOW__CELERY__WORKER_CONCURRENCY="3",
        # The workers import mlbatch's task code once, as deploy/ configures them.
        AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS="mlbatch.airflow.worker_preload.CELERY_CONFIG",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "airflow" / "logs"),
        AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY=str(home / "airflow" / "logs" / "dag_processor"),
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="2",
        # The GPU pool is not used (no GPUs here); Celery's own workers report to the API server.
        PYTHONUNBUFFERED="1",
    )
    return env


def worker_env(base: dict[str, str], home: Path, index: int) -> dict[str, str]:
    """A Celery worker's own home, log folder and log-server port: a machine of its own."""
    own = home / f"worker{index}"
    for sub in ("var", "tmp", "logs"):
        (own / sub).mkdir(parents=True, exist_ok=True)
    return {
        **base,
        "MLBATCH_HOME": str(own / "var"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(own / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "TMPDIR": str(own / "tmp"),
    }


def airflow_cmd(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "airflow", *args]


def start_airflow(st: Stack, unpaused: list[str], workers: int = 2) -> None:
    """Migrate the metadata DB, start every component (API server, scheduler, DAG processor,
    triggerer, ``workers`` Celery workers of their own), wait for the API, unpause ``unpaused``."""
    run(st.env, *airflow_cmd("db", "migrate"), timeout=600)
    for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        st.start(name, airflow_cmd(name), cwd=st.home)
    for i in range(1, workers + 1):
        st.start(
            f"worker{i}",
            airflow_cmd("celery", "worker", "--concurrency", "3", "--celery-hostname", f"w{i}@%h"),
            cwd=st.home / f"worker{i}",
            env=worker_env(st.env, st.home, i),
        )
    st.wait("the API server", lambda: httpx.get(f"{st.url}/api/v2/monitor/health", timeout=5).is_success)
    with st.client() as api:
        create_pools(api, Path(st.env["AIRFLOW__CORE__DAGS_FOLDER"]) / "specs")
        for dag_id in unpaused:
            st.wait(f"{dag_id} to be parsed", lambda d=dag_id: api.get(f"/dags/{d}").is_success)
            assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).is_success


def create_pools(api: httpx.Client, specs: Path) -> dict[str, int]:
    """mlbatch's pools, made as deploy/mwaa/create-pools.sh makes them: the bulk upsert of
    ``python -m mlbatch.airflow.pools --json`` sent to the REST API. Returns every pool's slots."""
    from mlbatch.airflow.pools import rest_upsert

    response = api.patch("/pools", json=rest_upsert(specs))
    assert response.is_success and not response.json()["create"]["errors"], response.text
    return {p["name"]: p["slots"] for p in api.get("/pools").json()["pools"]}


@contextmanager
def label_sheets(warehouse: Path, home: Path, canaries: Canaries, account: str) -> Iterator[tuple[Any, dict[str, str]]]:
    """The Sheets API double holding both models' label sheets (the slow model's the first 5,000
    rows), and the environment that reaches it: its endpoint and a Google connection whose
    service-account key carries a canary."""
    from devtools import synth
    from tests.fakes.sheets_api import FakeSheetsApi, service_account_key

    path = home / "labels.csv"
    synth.write_label_sheet_for(MODEL, warehouse, path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with FakeSheetsApi() as sheets:
        sheets.add_spreadsheet(SHEET_KEY)
        sheets.add_worksheet(SHEET_KEY, MODEL, rows, row_count=len(rows) + 10, column_count=10)
        sheets.add_worksheet(SHEET_KEY, SLOW, rows[:5000], row_count=5010, column_count=10)
        key = service_account_key(f"{sheets.endpoint}/token", canaries.google_key_id, account)
        yield (
            sheets,
            {
                "MLBATCH_SHEETS_ENDPOINT": sheets.endpoint,
                "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                    {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": json.dumps(key)}}
                ),
            },
        )


def days_before(n: int) -> str:
    return (today() - timedelta(days=n)).isoformat()


def iter_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path
