"""What ``mlbatch status`` reports: per model, its labels, production model, predictions, export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.backends.env import Environment
from mlbatch.maths.retrain import decide
from mlbatch.reporting import costs
from mlbatch.spec import ModelSpec, load_all
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.realized import flags, history
from mlbatch.stages.retrain import inputs


def _labels(env: Environment, spec: ModelSpec) -> dict[str, Any] | None:
    s, lab = schema.label_syncs, schema.labels
    with env.appdb.connect() as conn:
        sync = conn.execute(
            select(s.c.sync_id, s.c.finished_at)
            .where(s.c.model == spec.name, s.c.verdict.in_(["applied", "no_change"]))
            .order_by(s.c.finished_at.desc(), s.c.sync_id.desc())
            .limit(1)
        ).first()
        if sync is None:
            return None
        rows = conn.execute(select(func.count()).select_from(lab).where(lab.c.model == spec.name)).scalar()
    return {"sync_id": sync.sync_id, "rows": rows, "synced_at": sync.finished_at.isoformat() + "Z"}


def _predictions(env: Environment, spec: ModelSpec) -> dict[str, Any] | None:
    p = schema.publish_log
    with env.appdb.connect() as conn:
        row = conn.execute(
            select(p.c.ds, p.c.rows_published).where(p.c.model == spec.name).order_by(p.c.ds.desc()).limit(1)
        ).first()
    return {"latest_ds": row.ds.isoformat(), "rows": row.rows_published} if row else None


def _export(env: Environment, spec: ModelSpec) -> dict[str, Any] | None:
    table = names.export_table(spec.name)
    latest = env.warehouse.latest_day(table)
    if latest is None:
        return None
    return {"latest_ds": latest, "rows": env.warehouse.count_day(table, latest)}


def _realized(env: Environment, spec: ModelSpec) -> dict[str, Any] | None:
    """The newest measured day's realized metric, with its version's offline (held-out) value."""

    rows = [r for r in history(env.appdb, spec.name) if r["n_labelled"] > 0]
    if not rows:
        return None
    r = max(rows, key=lambda r: (r["ds"], r["measured_at"]))
    with env.appdb.connect() as conn:
        mv = registry.get(conn, spec.name, r["model_version"])
    offline = mv.metrics.get(r["metric"]) if mv else None
    return {
        "ds": r["ds"].isoformat(),
        "model_version": r["model_version"],
        "metric": r["metric"],
        "value": r["value"],
        "n_labelled": r["n_labelled"],
        "ci": [r["ci_low"], r["ci_high"]],
        "offline": offline if isinstance(offline, int | float) else None,
        "days": len({x["ds"] for x in rows}),
        "degraded": "degraded" in flags(env.appdb, spec.name).get(r["model_version"], {}),
    }


def _retrain(env: Environment, spec: ModelSpec) -> dict[str, Any]:
    """Would labels or drift start training now, and why (the labels DAG's decision, read live)."""

    ctx = RunContext(env=env, spec=spec, ds=datetime.now(UTC).date().isoformat(), run_id="status")
    found = inputs(ctx)
    decision = decide(spec.train.retrain, found)
    return {
        "retrain": decision.retrain,
        "reason": decision.reason,
        "last_training_started": found.last_started_at.isoformat() + "Z" if found.last_started_at else None,
    }


def collect(env: Environment) -> dict[str, Any]:
    models = []
    month = datetime.now(UTC).strftime("%Y-%m")  # runs' cost lines summed over this month
    have_db = env.appdb.has_table(schema.label_syncs.name)
    for spec in load_all(env.specs_dir):
        prod = registry.production(env.appdb, spec.name) if have_db else None
        models.append(
            {
                "name": spec.name,
                "labels": _labels(env, spec) if have_db else None,
                "production_model": {"version": prod.version, "metric": prod.metric, "value": prod.value}
                if prod
                else None,
                "predictions": _predictions(env, spec) if have_db else None,
                "export": _export(env, spec),
                "realized": _realized(env, spec) if have_db else None,
                "retrain": _retrain(env, spec),
                "cost": costs.month(env.store, spec.name, month),
            }
        )
    return {"models": models}
