"""What a run used: its cost line, and a model's sums per month (``mlbatch status``).

Taken afterwards from what the run left, so no task measures anything extra:

* job vCPU-seconds and GPU-seconds: each job's wall time (``seconds`` in its success marker: the
  train job's ``_SUCCESS``, each score shard's ``part-NNNN.parquet._SUCCESS``) times the spec's
  ``resources`` of that job (what the job asked for and was billed);
* bytes unloaded: the ``content_length`` of the run's UNLOAD manifests (train and score);
* warehouse statement seconds: ``seconds`` of the run's ``statement__<kind>*.json`` state
  (written by warehouse statements that record it; None when none did);
* rows published: the app-DB publish of the day (``ml_publish_log``), for a score run.

Each cost line is also kept in ``costs/<model>/<YYYY-MM>/<kind>-<run_key>.json`` (one per run: a
rerun replaces its own), which :func:`month` sums.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.spec import Resources
from mlbatch.stages.context import RunContext

FIELDS = ("job_seconds", "job_vcpu_seconds", "job_gpu_seconds", "warehouse_seconds", "bytes_unloaded", "rows_published")


def _marker_seconds(store: Any, uri: str) -> float | None:
    key = store.key(uri)
    if not store.exists(key):
        return None
    seconds = store.get_json(key).get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else None


def _jobs(ctx: RunContext, kind: str) -> list[tuple[float, Resources]]:
    """(wall seconds, resources) of each job the run ran."""
    store, found = ctx.env.store, []
    if kind == "train" and store.exists(ctx.state_key("train")):
        artifact = ctx.load_state("train", "")["artifact_uri"]
        seconds = _marker_seconds(store, artifact + "_SUCCESS")
        if seconds is not None:
            found.append((seconds, ctx.spec.train.resources))
    if kind == "score" and store.exists(ctx.state_key("model")):
        for shard in range(ctx.spec.score.shards):
            seconds = _marker_seconds(store, store.uri(ctx.shard_key(shard)) + "._SUCCESS")
            if seconds is not None:
                found.append((seconds, ctx.spec.score.resources))
    return found


def _unloaded(ctx: RunContext, kind: str) -> int:
    store, key = ctx.env.store, ctx.manifest_key(kind)
    if not store.exists(key):
        return 0
    return sum(int(e.get("meta", {}).get("content_length", 0)) for e in store.get_json(key)["entries"])


def _warehouse_seconds(ctx: RunContext, kind: str) -> float | None:
    store = ctx.env.store
    folder = ctx.run_prefix()
    mine = f"statement__{kind}"  # e.g. statement__train_unload.json; the other DAG's are not this run's
    found = [k for k in store.list(folder) if k.rsplit("/", 1)[-1].startswith(mine) and k.endswith(".json")]
    seconds = [store.get_json(k).get("seconds") for k in found]
    values = [float(s) for s in seconds if isinstance(s, int | float)]
    return round(sum(values), 3) if values else None


def _published(ctx: RunContext) -> int:

    db, p = ctx.env.appdb, schema.publish_log
    if not db.has_table(p.name):
        return 0
    with db.connect() as conn:
        row = conn.execute(
            select(p.c.rows_published, p.c.run_id).where(p.c.model == ctx.model, p.c.ds == date.fromisoformat(ctx.ds))
        ).first()
    return int(row.rows_published) if row and row.run_id == ctx.run_id else 0


def run_cost(ctx: RunContext, kind: str) -> dict[str, Any]:
    """The cost line of the run's ``kind`` DAG (``train`` or ``score``; see the module doc).

    By kind: a model's train and score DAG runs of one logical date have the same run id, so they
    share a state folder (``runs/<model>/<ds>/<run_key>/``); each counts only its own work."""
    jobs = _jobs(ctx, kind)
    return {
        "job_seconds": round(sum(s for s, _ in jobs), 3),
        "job_vcpu_seconds": round(sum(s * r.vcpu for s, r in jobs), 3),
        "job_gpu_seconds": round(sum(s * r.gpu for s, r in jobs), 3),
        "warehouse_seconds": _warehouse_seconds(ctx, kind),
        "bytes_unloaded": _unloaded(ctx, kind),
        "rows_published": _published(ctx) if kind == "score" else 0,
    }


def record(ctx: RunContext, kind: str, now: datetime | None = None) -> dict[str, Any]:
    """Compute the run's cost line and keep it in the model's ledger for the month; returns it."""
    cost = run_cost(ctx, kind)
    month = (now or datetime.now(UTC)).strftime("%Y-%m")
    entry = {"run_id": ctx.run_id, "ds": ctx.ds, "kind": kind, **cost}
    ctx.env.store.put_json(names.cost_key(ctx.model, month, kind, ctx.run_key), entry)
    return cost


def line(cost: dict[str, Any]) -> str:
    """``vCPU 1,234 s, GPU 0 s, warehouse 12 s, 56.1 MB unloaded, 161,244 rows published``."""
    wh = cost.get("warehouse_seconds")
    return (
        f"vCPU {cost['job_vcpu_seconds']:,.0f} s, GPU {cost['job_gpu_seconds']:,.0f} s, "
        f"warehouse {'n/a' if wh is None else f'{wh:,.0f} s'}, {cost['bytes_unloaded'] / 1e6:,.1f} MB unloaded, "
        f"{cost['rows_published']:,} rows published"
    )


def month(store: Any, model: str, when: str) -> dict[str, Any]:
    """A model's cost lines of a month (``YYYY-MM``) summed, with the number of runs."""
    entries = [store.get_json(k) for k in store.list(names.costs_prefix(model, when)) if k.endswith(".json")]
    total: dict[str, Any] = {"month": when, "runs": len(entries)}
    for name in FIELDS:
        values = [e[name] for e in entries if isinstance(e.get(name), int | float)]
        total[name] = round(sum(values), 3) if values or name != "warehouse_seconds" else None
    # Each DAG kind's newest run of the month, with its own cost line.
    total["latest_runs"] = {e["kind"]: e for e in sorted(entries, key=lambda e: (e.get("ds", ""), e.get("run_id", "")))}
    return total
