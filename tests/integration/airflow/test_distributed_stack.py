"""mlbatch on a distributed Airflow stack, the way production runs it (see airflow_stack.py):
CeleryExecutor with Redis and two workers in their own working directories, PostgreSQL as the
metadata DB, moto S3, MariaDB, jobs in Docker containers, labels through gspread.

The cycle, driven through the REST API as an engineer or the scheduler would:

1. a label sync (triggered with ``"logical_date": null``) changes labels, emits its asset event,
   and the scheduler starts training from that event (a run with no logical date), which trains on
   exactly that sync's labels; its candidate waits for a person, who signs into the UI in
   Chromium (Playwright), opens the required action and clicks Approve;
2. unpausing the score DAG starts today's scheduled run; a run triggered with
   ``"logical_date": null`` scores today as well; both publish and export;
3. a 5-day backfill created with the API's defaults (up to 10 runs at once) ends green, the
   publishes taking turns, and today's newer rows untouched;
4. a dry run triggered from the UI's trigger form writes nothing;
5. a running training job's task marked failed through the API: its container is gone in 60 s;
6. a training task that hits its execution_timeout: its container is stopped as well;
7. a label sheet with a bad row blocks its sync and fires the failure alert (to a webhook that
   cannot be reached, whose URL holds a token);
8. every credential is a canary, and no log of any component or task holds one;
9. a second candidate (force_retrain) is rejected in the UI: production is unchanged;
10. in the browser as well: the version's report opens from the model gate's Report button, a dry
    run is triggered from the trigger form, and a 3-day backfill from the Backfill dialog.

One stack per module: starting it is most of the cost.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.devservers import MariaDB, start_postgres, start_redis
from tests.integration.airflow.airflow_stack import (
    MODEL,
    REPO,
    SHEET_KEY,
    SLOW,
    USER,
    Canaries,
    Stack,
    airflow_env,
    days_before,
    free_port,
    iter_files,
    label_sheets,
    start_airflow,
    today,
    write_dags,
)
from tests.integration.airflow.rest import appdb_rows as _appdb_rows
from tests.integration.airflow.rest import runs as _runs
from tests.integration.airflow.rest import succeeded as _succeeded
from tests.integration.airflow.rest import task_states as _task_states
from tests.integration.airflow.rest import trigger as _trigger

BACKFILL = [days_before(n) for n in range(7, 2, -1)]  # 5 days, the oldest 7 days ago
UI_BACKFILL = [days_before(n) for n in range(12, 9, -1)]  # 3 days before the API backfill's
STOPPED_WITHIN_S = 60
APPROVE_COMMENT = "report reviewed, the gate metric holds"
REJECT_COMMENT = "same labels as production: nothing to gain"
REPO_ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def canaries() -> Canaries:
    return Canaries()


def _appdb(mariadb: MariaDB, canaries: Canaries) -> tuple[str, str]:
    """A database of its own and a user whose password is a canary; returns (url, database)."""
    from sqlalchemy import create_engine, text

    name = f"stack_{uuid.uuid4().hex[:8]}"
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
        conn.execute(text(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{canaries.appdb_password}'"))
        conn.execute(text(f"GRANT ALL ON `{name}`.* TO '{name}'@'127.0.0.1'"))
        conn.execute(text(f"GRANT PROCESS ON *.* TO '{name}'@'127.0.0.1'"))  # naming a blocking session
    admin.dispose()
    return f"mysql+pymysql://{name}@127.0.0.1:{mariadb.port}/{name}", name


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mariadb, s3_endpoint, dockerd, images, canaries) -> Iterator[Stack]:
    import boto3

    from devtools import synth

    home = tmp_path_factory.mktemp("stack")
    pg = start_postgres(home, password=canaries.metadb_password)
    redis = start_redis(home, password=canaries.redis_password)
    appdb_url, _ = _appdb(mariadb, canaries)
    bucket = f"stack-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    ).create_bucket(Bucket=bucket)
    warehouse = home / "warehouse.duckdb"  # the Redshift stand-in: a shared "server", not a worker's file
    synth.build_warehouse(warehouse, ref_date=today())
    dags = home / "dags"
    write_dags(dags)
    port = free_port()
    with label_sheets(warehouse, home, canaries, "mlbatch-stack") as (sheets, sheets_env):
        env = airflow_env(
            home,
            port,
            dags,
            pg.url(),
            redis.url,
            "db+" + pg.url("postgresql+psycopg2"),  # SQLAlchemy 2.1 defaults to psycopg 3
            canaries.ui_password,
        )
        env.update(sheets_env)
        env.update(
            MLBATCH_APPDB_URL=appdb_url,
            MLBATCH_APPDB_PASSWORD=canaries.appdb_password,
            MLBATCH_OBJECT_STORE=f"s3://{bucket}/mlbatch",
            MLBATCH_WAREHOUSE=f"duckdb://{warehouse}",
            MLBATCH_LAUNCHER="docker",
            MLBATCH_TRAIN_IMAGE=images["train"],
            MLBATCH_SCORE_IMAGE=images["score"],
            MLBATCH_DOCKER_NETWORK="host",  # moto listens on 127.0.0.1
            MLBATCH_DOCKER_PASS_ENV="AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY",  # the jobs' S3 keys (moto)
            DOCKER_HOST=dockerd.host,
            AWS_ENDPOINT_URL=s3_endpoint,
            AWS_ENDPOINT_URL_S3=s3_endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="AKIASTACKTESTS",
            AWS_SECRET_ACCESS_KEY=canaries.aws_secret,
            AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
                {
                    "conn_type": "aws",
                    "login": "AKIASTACKTESTS",
                    "password": canaries.aws_secret,
                    "extra": {"region_name": "us-east-1", "endpoint_url": s3_endpoint},
                }
            ),
            # An unreachable webhook whose URL carries its token (as Slack's do) and a secret header.
            AIRFLOW_CONN_MLBATCH_ALERTS=json.dumps(
                {
                    "conn_type": "http",
                    "host": f"http://127.0.0.1:{free_port()}/services/T0STACK/B0STACK/{canaries.webhook_token}",
                    "extra": {"Authorization": canaries.webhook_header},
                }
            ),
        )
        st = Stack(home, f"http://127.0.0.1:{port}", env, canaries.ui_password)
        from sqlalchemy.engine import make_url

        st.appdb_url = make_url(appdb_url).set(password=canaries.appdb_password).render_as_string(hide_password=False)
        try:
            start_airflow(st, [f"{MODEL}__labels", f"{MODEL}__train", f"{SLOW}__labels", f"{SLOW}__train"])
            st.sheets = sheets  # type: ignore[attr-defined]
            st.canaries = canaries  # type: ignore[attr-defined]
            yield st
        finally:
            st.stop()
            redis.stop()
            pg.stop()


def _containers(stack: Stack, dag_id: str, run_id: str | None = None, status: str | None = None) -> list:
    import docker

    client = docker.DockerClient(base_url=stack.env["DOCKER_HOST"])
    labels = [f"io.mlbatch.dag_id={dag_id}"] + ([f"io.mlbatch.run_id={run_id}"] if run_id else [])
    filters: dict[str, Any] = {"label": labels}
    if status:
        filters["status"] = status
    return client.containers.list(all=True, filters=filters)


# --- 1. labels → asset event → training without a logical date ------------------------------------
@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, Any]:
    with stack.client() as api:
        labels = _trigger(api, f"{MODEL}__labels")
        stack.wait("the label sync", lambda: _succeeded(api, f"{MODEL}__labels", [labels["dag_run_id"]]))
        train = stack.wait(
            "a training run started by the labels asset",
            lambda: [r for r in _runs(api, f"{MODEL}__train") if r["run_type"] == "asset_triggered"],
        )[0]
        _awaiting_approval(stack, api, train["dag_run_id"])
        _answer_in_the_ui(stack, train["dag_run_id"], "Approve", APPROVE_COMMENT, "approve")
        stack.wait(
            "the asset-triggered training run",
            lambda: _succeeded(api, f"{MODEL}__train", [train["dag_run_id"]]),
            timeout=600,
        )
        states = _task_states(api, f"{MODEL}__train", train["dag_run_id"])
    return {"labels": labels, "train": train, "states": states}


def _awaiting_approval(stack: Stack, api, run_id: str) -> None:
    def asked() -> bool:
        states = _task_states(api, f"{MODEL}__train", run_id)
        assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
        return states.get("approve_promotion") == "awaiting_input"

    stack.wait(f"training run {run_id} to ask for approval", asked, timeout=600)


def _answer_in_the_ui(stack: Stack, run_id: str, option: str, comment: str, name: str) -> None:
    """An engineer signs in, opens the required action, writes a comment and clicks ``option``."""
    from urllib.parse import quote

    from tests.integration.airflow.browser import keep, signed_in

    with signed_in(stack.url, USER, stack.ui_password, REPO_ARTIFACTS) as page:
        page.goto(
            f"{stack.url}/dags/{MODEL}__train/runs/{quote(run_id, safe='')}/tasks/approve_promotion/required_actions"
        )
        page.get_by_text(f"Promote {MODEL}").first.wait_for()
        # The form Airflow renders from the task's params: input "element_<param>", one button per option.
        page.locator("#element_comment").fill(comment)
        keep(page, REPO_ARTIFACTS, f"hitl-{name}-asked")
        page.get_by_test_id(f"hitl-option-{option}").click()
        page.get_by_text("response successful").first.wait_for()
        keep(page, REPO_ARTIFACTS, f"hitl-{name}-answered")


def test_a_person_approved_the_promotion_in_the_ui(stack: Stack, trained: dict[str, Any]) -> None:
    [(version, reason)] = _appdb_rows(
        stack, "SELECT version, reason FROM ml_model_versions WHERE model = :m AND status = 'production'", m=MODEL
    )
    assert reason == f"approved by {USER}: {APPROVE_COMMENT}"  # who and why, as typed in the browser
    assert trained["states"]["approve_promotion"] == "success" and trained["states"]["announce_model"] == "success"


def test_label_change_starts_training_from_its_asset_event(stack: Stack, trained: dict[str, Any]) -> None:
    train = trained["train"]
    assert train["logical_date"] is None  # asset-triggered: no logical date, the day is run_after's
    [(sync_id,)] = _appdb_rows(
        stack, "SELECT sync_id FROM ml_label_syncs WHERE model = :m AND verdict = 'applied'", m=MODEL
    )
    [(version, lineage)] = _appdb_rows(
        stack, "SELECT version, lineage_json FROM ml_model_versions WHERE model = :m AND status = 'production'", m=MODEL
    )
    lineage = json.loads(lineage)
    assert lineage["label_sync_id"] == sync_id  # trained on the labels of the change that started it
    assert lineage["run_id"] == train["dag_run_id"]
    assert version.startswith(today().strftime("%Y%m%d"))  # the run's day: run_after's, in UTC


def test_the_version_s_report_is_one_click_from_its_task(stack: Stack, trained: dict[str, Any]) -> None:
    """The model gate's "Report" button opens report.html through the plugin's view, signed in."""
    from urllib.parse import quote

    from tests.integration.airflow.browser import keep, signed_in

    [(version,)] = _appdb_rows(
        stack, "SELECT version FROM ml_model_versions WHERE model = :m AND status = 'production'", m=MODEL
    )
    run_id = quote(trained["train"]["dag_run_id"], safe="")
    with stack.client() as api:
        links = api.get(f"/dags/{MODEL}__train/dagRuns/{run_id}/taskInstances/model_gate/links").json()
    assert (links.get("extra_links") or {}).get("Report", "").startswith("/mlbatch/reports/"), links
    with signed_in(stack.url, USER, stack.ui_password, REPO_ARTIFACTS) as page:
        page.goto(f"{stack.url}/dags/{MODEL}__train/runs/{run_id}/tasks/model_gate/details")  # extra links
        page.get_by_role("link", name="Report").first.click()  # the task's "Extra Links"
        page.wait_for_url("**/mlbatch/reports/**")
        page.get_by_text(version).first.wait_for()
        page.get_by_text("Held-out metrics").wait_for()
        keep(page, REPO_ARTIFACTS, "report-from-the-ui")


# --- 2. scoring: the scheduled run and one triggered without a logical date ----------------------
@pytest.fixture(scope="module")
def scored_today(stack: Stack, trained: dict[str, Any]) -> dict[str, Any]:
    dag_id = f"{MODEL}__score"
    with stack.client() as api:
        stack.wait(f"{dag_id} to be parsed", lambda: api.get(f"/dags/{dag_id}").is_success)
        assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).is_success  # today's scheduled run starts
        manual = _trigger(api, dag_id)
        scheduled = stack.wait(
            "today's scheduled run", lambda: [r for r in _runs(api, dag_id) if r["run_type"] == "scheduled"]
        )[0]
        ids = [manual["dag_run_id"], scheduled["dag_run_id"]]
        runs = stack.wait("today's score runs", lambda: _succeeded(api, dag_id, ids), timeout=600)
    return {"manual": manual, "scheduled": scheduled, "runs": runs}


def test_score_run_without_logical_date_scores_today(stack: Stack, scored_today: dict[str, Any]) -> None:
    assert scored_today["manual"]["logical_date"] is None
    assert scored_today["scheduled"]["logical_date"].startswith(today().isoformat())
    [(rows, run_id)] = _appdb_rows(
        stack, "SELECT rows_published, run_id FROM ml_publish_log WHERE model = :m AND ds = :d", m=MODEL, d=today()
    )
    assert rows > 1000 and run_id in {r["dag_run_id"] for r in scored_today["runs"]}
    [(count,)] = _appdb_rows(stack, f"SELECT count(*) FROM {MODEL}_predictions WHERE ds = :d", d=today())
    assert count == rows


# --- 3 + 4. a 5-day backfill with the API's defaults, and a dry run beside it --------------------
@pytest.fixture(scope="module")
def backfill(stack: Stack, scored_today: dict[str, Any]) -> dict[str, Any]:
    dag_id = f"{MODEL}__score"
    before = _appdb_rows(
        stack,
        "SELECT rows_published, checksum, run_id FROM ml_publish_log WHERE model = :m AND ds = :d",
        m=MODEL,
        d=today(),
    )
    started = time.monotonic()
    with stack.client() as api:
        r = api.post(
            "/backfills",
            json={"dag_id": dag_id, "from_date": f"{BACKFILL[0]}T00:00:00Z", "to_date": f"{BACKFILL[-1]}T00:00:00Z"},
        )
        assert r.status_code in (200, 201), r.text
        created = r.json()
        assert created["max_active_runs"] == 10  # the default: every day at once
        dry_run_id = _trigger_dry_run_in_the_ui(stack)

        def done() -> list[dict] | None:
            runs = _runs(api, dag_id, run_type="backfill")
            failed = [x["dag_run_id"] for x in runs if x["state"] == "failed"]
            assert not failed, {rid: _task_states(api, dag_id, rid) for rid in failed}
            return runs if len(runs) == len(BACKFILL) and all(x["state"] == "success" for x in runs) else None

        runs = stack.wait("the backfill's 5 runs to succeed", done, timeout=900, every=5)
        _record("backfill_5_days_s", time.monotonic() - started)
        # Airflow allows one active backfill per DAG and marks one complete on a 30 s timer after
        # its runs end; until then a second backfill (the UI's, below) is refused with a 409.
        stack.wait(
            "the backfill to be marked complete",
            lambda: api.get(f"/backfills/{created['id']}").json().get("completed_at"),
            timeout=120,
            every=3,
        )
        [dry] = stack.wait("the dry run", lambda: _succeeded(api, dag_id, [dry_run_id]))
        dry_states = _task_states(api, dag_id, dry_run_id)
    return {"created": created, "runs": runs, "before": before, "dry": dry, "dry_states": dry_states}


def _trigger_dry_run_in_the_ui(stack: Stack) -> str:
    """An engineer opens the score DAG, clicks Trigger, switches on "Dry run" and triggers; the
    UI then shows the new run, whose id the page's URL carries."""
    from urllib.parse import unquote

    from tests.integration.airflow.browser import keep, signed_in

    with signed_in(stack.url, USER, stack.ui_password, REPO_ARTIFACTS) as page:
        page.goto(f"{stack.url}/dags/{MODEL}__score")
        page.get_by_role("button", name="Trigger").first.click()
        dry_run = page.locator('input[name="element_dry_run"]')  # the form Airflow renders from the params
        dry_run.locator("xpath=..").click()
        assert dry_run.is_checked()
        keep(page, REPO_ARTIFACTS, "trigger-dry-run")
        page.get_by_role("dialog").get_by_role("button", name="Trigger").click()
        page.wait_for_url("**/runs/**")
        return unquote(page.url.split("/runs/", 1)[1].split("/", 1)[0].split("?", 1)[0])


def test_backfill_with_api_defaults_publishes_every_day_and_keeps_the_newest(stack: Stack, backfill) -> None:
    assert sorted(r["logical_date"][:10] for r in backfill["runs"]) == BACKFILL
    log = dict(_appdb_rows(stack, "SELECT ds, rows_published FROM ml_publish_log WHERE model = :m", m=MODEL))
    assert {d.isoformat() for d in log} >= set(BACKFILL)
    after = _appdb_rows(
        stack,
        "SELECT rows_published, checksum, run_id FROM ml_publish_log WHERE model = :m AND ds = :d",
        m=MODEL,
        d=today(),
    )
    assert after == backfill["before"]  # the newest day's publish untouched
    per_day = dict(_appdb_rows(stack, f"SELECT ds, count(*) FROM {MODEL}_predictions GROUP BY ds"))
    assert per_day[today()] == log[today()]  # no older day replaced a row of the newest
    [(rows, keys)] = _appdb_rows(stack, f"SELECT count(*), count(DISTINCT entity_key) FROM {MODEL}_predictions")
    assert rows == keys


def test_dry_run_from_the_trigger_form_runs_the_gates_and_writes_nothing(stack: Stack, backfill) -> None:
    assert backfill["dry"]["conf"] == {"dry_run": True, "model_version": None}  # what the form sent
    states = backfill["dry_states"]
    assert states["features_gate"] == "success" and states["predictions_gate"] == "success", states
    assert {states[t] for t in ("publish", "export", "export_gate")} == {"skipped"}, states
    [(run_id,)] = _appdb_rows(
        stack, "SELECT run_id FROM ml_publish_log WHERE model = :m AND ds = :d", m=MODEL, d=today()
    )
    assert run_id != backfill["dry"]["dag_run_id"]  # today's publish is still the earlier run's


# --- a backfill from the UI's dialog ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ui_backfill(stack: Stack, backfill) -> dict[str, Any]:
    from tests.integration.airflow.browser import keep, signed_in

    dag_id = f"{MODEL}__score"
    before = _appdb_rows(stack, "SELECT ds, checksum, run_id FROM ml_publish_log WHERE model = :m", m=MODEL)
    with signed_in(stack.url, USER, stack.ui_password, REPO_ARTIFACTS) as page:
        page.goto(f"{stack.url}/dags/{dag_id}")
        page.get_by_role("button", name="Trigger").first.click()
        page.get_by_role("dialog").get_by_text("Backfill", exact=True).click()
        for which, day in enumerate((UI_BACKFILL[0], UI_BACKFILL[-1])):  # From, To: a date picker each
            page.get_by_role("dialog").get_by_test_id("datetime-input").nth(which).click()
            picker = page.locator('[data-scope="popover"][data-part="content"][data-state="open"]')
            picker.get_by_placeholder("YYYY/MM/DD").fill(day.replace("-", "/"))
            picker.get_by_placeholder("HH:mm").fill("00:00")
            page.keyboard.press("Escape")
        page.get_by_text(f"{len(UI_BACKFILL)} runs will be triggered").wait_for()
        keep(page, REPO_ARTIFACTS, "backfill-dialog")
        page.get_by_role("button", name="Run Backfill").click()
        page.get_by_text("Backfill generated").first.wait_for()  # a refusal shows its reason instead
    with stack.client() as api:

        def done() -> list[dict] | None:
            runs = [r for r in _runs(api, dag_id, run_type="backfill") if r["logical_date"][:10] in UI_BACKFILL]
            failed = [x["dag_run_id"] for x in runs if x["state"] == "failed"]
            assert not failed, {rid: _task_states(api, dag_id, rid) for rid in failed}
            return runs if len(runs) == len(UI_BACKFILL) and all(x["state"] == "success" for x in runs) else None

        runs = stack.wait("the UI backfill's runs to succeed", done, timeout=900, every=5)
    return {"runs": runs, "before": before}


def test_a_backfill_from_the_ui_dialog_publishes_its_days_and_touches_no_other(stack: Stack, ui_backfill) -> None:
    assert sorted(r["logical_date"][:10] for r in ui_backfill["runs"]) == UI_BACKFILL
    after = _appdb_rows(stack, "SELECT ds, checksum, run_id FROM ml_publish_log WHERE model = :m", m=MODEL)
    added = {row[0].isoformat() for row in set(after) - set(ui_backfill["before"])}
    assert added == set(UI_BACKFILL)  # its days, and every day published before is as it was


# --- 5 + 6. stopping a task stops its job ---------------------------------------------------------
def _record(name: str, seconds: float) -> None:
    """Keep a measured figure in test-artifacts/stack-figures.json (and the test output)."""
    path = REPO_ARTIFACTS / "stack-figures.json"
    path.parent.mkdir(exist_ok=True)
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = round(seconds, 1)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"[stack] {name}: {seconds:.1f}")


def _running_job(stack: Stack, api, dag_id: str, run_id: str) -> Any:
    def running() -> Any:
        states = _task_states(api, dag_id, run_id)
        assert states.get("unload_training") != "failed" and states.get("train") != "failed", states
        found = _containers(stack, dag_id, run_id, status="running")
        return found[0] if found and states.get("train") == "running" else None

    return stack.wait(f"the training job of {run_id} to run", running, timeout=300)


def _gone(stack: Stack, container_id: str) -> bool:
    import docker

    client = docker.DockerClient(base_url=stack.env["DOCKER_HOST"])
    try:
        return not client.containers.get(container_id).attrs["State"]["Running"]
    except docker.errors.NotFound:
        return True


@pytest.fixture(scope="module")
def slow_labels(stack: Stack, backfill) -> None:
    with stack.client() as api:
        labels = _trigger(api, f"{SLOW}__labels")
        stack.wait("the slow model's label sync", lambda: _succeeded(api, f"{SLOW}__labels", [labels["dag_run_id"]]))


def test_marking_a_running_train_task_failed_stops_its_container(stack: Stack, slow_labels) -> None:
    dag_id = f"{SLOW}__train"
    with stack.client() as api:
        train = stack.wait(
            "the slow model's asset-triggered training",
            lambda: [r for r in _runs(api, dag_id) if r["run_type"] == "asset_triggered"],
        )[0]
        container = _running_job(stack, api, dag_id, train["dag_run_id"])
        r = api.patch(f"/dags/{dag_id}/dagRuns/{train['dag_run_id']}/taskInstances/train", json={"new_state": "failed"})
        assert r.is_success, r.text
        marked = time.monotonic()
        stack.wait("the container to stop", lambda: _gone(stack, container.id), timeout=STOPPED_WITHIN_S, every=1)
        stopped_after = time.monotonic() - marked
        assert _task_states(api, dag_id, train["dag_run_id"])["train"] == "failed"
    _record("mark_failed_to_container_stopped_s", stopped_after)
    assert stopped_after < STOPPED_WITHIN_S
    # No retry started a new job: a task marked failed is done.
    time.sleep(5)
    assert not _containers(stack, dag_id, train["dag_run_id"], status="running")


def test_execution_timeout_stops_the_container(stack: Stack, slow_labels) -> None:
    dag_id = f"{SLOW}__train"
    with stack.client() as api:
        run_ = _trigger(api, dag_id, dag_run_id=f"timeout_{uuid.uuid4().hex[:6]}")
        container = _running_job(stack, api, dag_id, run_["dag_run_id"])
        started = time.monotonic()
        # train.timeout_minutes is 1: the task times out, on_kill stops the container.
        stack.wait(
            "the timed-out job's container to stop",
            lambda: _gone(stack, container.id),
            timeout=60 + STOPPED_WITHIN_S,
            every=1,
        )
        _record("running_to_timed_out_container_stopped_s", time.monotonic() - started)
        assert time.monotonic() - started < 60 + STOPPED_WITHIN_S
        stack.wait(
            "the train task to be up for retry",
            lambda: _task_states(api, dag_id, run_["dag_run_id"])["train"] in ("up_for_retry", "failed"),
            timeout=60,
        )
        # End the run: its retry would time out again a minute later.
        r = api.patch(f"/dags/{dag_id}/dagRuns/{run_['dag_run_id']}", json={"state": "failed"})
        assert r.is_success, r.text


# --- 7. a blocked sheet alerts; no secret in any log ------------------------------------------------
@pytest.fixture(scope="module")
def blocked_sheet(stack: Stack, slow_labels) -> dict[str, str]:
    """An analyst renames the label column: the sync is blocked, the failure callback
    posts to the (unreachable) webhook. A task marked failed or timed out into a retry fires no
    failure callback, so this is the run that proves the alert path."""
    sheet = stack.sheets.worksheet(SHEET_KEY, SLOW)  # type: ignore[attr-defined]
    sheet.set(0, 1, "sex")  # the header of column B, the label ("gender")
    with stack.client() as api:
        run_ = _trigger(api, f"{SLOW}__labels")

        def ended() -> str | None:
            [found] = [r for r in _runs(api, f"{SLOW}__labels") if r["dag_run_id"] == run_["dag_run_id"]]
            return found["state"] if found["state"] in ("success", "failed") else None

        state = stack.wait("the blocked label sync", ended)
        return {"state": state, **_task_states(api, f"{SLOW}__labels", run_["dag_run_id"])}


def test_a_renamed_label_column_blocks_the_sync_and_writes_nothing(stack: Stack, blocked_sheet: dict[str, str]) -> None:
    assert blocked_sheet["state"] == "failed"
    assert blocked_sheet["labels_gate"] == "failed", blocked_sheet  # the gate says why; no retry
    assert blocked_sheet["apply_labels"] == "upstream_failed", blocked_sheet
    [(applied,)] = _appdb_rows(
        stack, "SELECT count(*) FROM ml_label_syncs WHERE model = :m AND verdict = 'applied'", m=SLOW
    )
    assert applied == 1  # the first sync only: the blocked one applied nothing


def test_no_credential_reaches_any_log(stack: Stack, canaries: Canaries, backfill, blocked_sheet) -> None:
    # The blocked sync fired the failure callback against the unreachable webhook.
    logs = list(iter_files(stack.home / "logs")) + list(iter_files(stack.home / "airflow" / "logs"))
    for i in (1, 2):
        logs += list(iter_files(stack.home / f"worker{i}" / "logs"))
    texts = {p: p.read_text(errors="replace") for p in logs}
    assert sum("failure alert to connection 'mlbatch_alerts'" in t for t in texts.values()), (
        "no failure callback ran: the canary check would prove nothing"
    )
    leaks = {
        name: sorted(str(p.relative_to(stack.home)) for p, t in texts.items() if value in t)
        for name, value in canaries.values().items()
    }
    leaks = {k: v for k, v in leaks.items() if v}
    assert not leaks, f"credentials found in logs: {leaks}"
    assert len(texts) > 20  # component logs and both workers' task logs were read


def test_tasks_ran_on_both_workers(stack: Stack, backfill) -> None:
    per_worker = {
        i: sum(1 for p in iter_files(stack.home / f"worker{i}" / "logs") if p.suffix == ".log") for i in (1, 2)
    }
    assert all(n > 0 for n in per_worker.values()), per_worker


def test_grid_page_renders_the_score_dag_in_chromium(stack: Stack, backfill) -> None:
    from tests.integration.airflow.browser import keep, signed_in

    with signed_in(stack.url, USER, stack.ui_password, REPO_ARTIFACTS) as page:
        page.goto(f"{stack.url}/dags/{MODEL}__score")
        page.get_by_text(f"{MODEL}__score").first.wait_for()
        page.get_by_text("predictions_gate").first.wait_for()  # the grid lists the DAG's tasks
        shot = keep(page, REPO_ARTIFACTS, f"airflow_grid_{MODEL}__score")
    assert shot.stat().st_size > 30_000, f"{shot} is only {shot.stat().st_size} bytes: a blank page?"


# --- a second candidate, rejected in the UI -------------------------------------------------------------
@pytest.fixture(scope="module")
def rejected(stack: Stack, backfill) -> dict[str, Any]:
    dag_id = f"{MODEL}__train"
    [(before,)] = _appdb_rows(
        stack, "SELECT version FROM ml_model_versions WHERE model = :m AND status = 'production'", m=MODEL
    )
    with stack.client() as api:
        run_ = _trigger(api, dag_id, conf={"force_retrain": True})
        _awaiting_approval(stack, api, run_["dag_run_id"])
        _answer_in_the_ui(stack, run_["dag_run_id"], "Reject", REJECT_COMMENT, "reject")
        stack.wait("the rejected training run", lambda: _succeeded(api, dag_id, [run_["dag_run_id"]]))
        states = _task_states(api, dag_id, run_["dag_run_id"])
    return {"before": before, "states": states}


def test_rejecting_in_the_ui_keeps_the_champion(stack: Stack, rejected: dict[str, Any]) -> None:
    rows = _appdb_rows(stack, "SELECT version, status, reason FROM ml_model_versions WHERE model = :m", m=MODEL)
    production = [v for v, status, _ in rows if status == "production"]
    assert production == [rejected["before"]]  # unchanged
    assert [reason for _, status, reason in rows if status == "rejected"] == [f"rejected by {USER}: {REJECT_COMMENT}"]
    assert rejected["states"]["approve_promotion"] == "success"  # a person answered: the task did its job
    assert rejected["states"]["announce_model"] == "skipped"  # no new model to announce
