"""Realized performance: each published day measured against the labels that arrived later.

Analysts keep labelling after a day was scored. After a label sync (the labels DAG's
``realized_performance`` task; ``mlbatch run --stage labels``), at most once per day (the run's
``ds``) and only when a label changed or a day was published since the last measurement, each day
of the last ``monitoring.lookback_days`` in ``ml_publish_log`` that needs it is measured
(incrementally: :mod:`mlbatch.stages.realized_days`; a day already measured costs only its new
labels):

1. the day's published predictions: the prediction shards of the run that published it
   (``predictions/<model>/<ds>/<run>/``, named by the log's ``run_id``), else the day's export
   file; ``<model>_predictions`` keeps only each entity's newest day, so it cannot serve;
2. joined with the model's current labels, *leaving out every key in the label snapshot the
   version was trained on* (its lineage's ``label_sync_id``): those labels are not late, and
   scoring a model on its own training rows would flatter it;
3. measured with the gate's metric (:mod:`mlbatch.maths.realized_metrics`) and upserted into
   ``ml_realized_performance`` keyed by (model, version, day, metric): a rerun replaces the row.

A day whose metric is worse than ``train.gate.min`` on at least ``monitoring.min_rows``
labelled rows is *degraded*: with ``monitoring.alert`` the failure webhook gets one message
naming every degraded day and the version is flagged ``degraded`` in ``ml_model_flags`` (its
status is left alone). The result's ``retrain`` tells the DAG to emit the retrain asset event
(``monitoring.retrain_on_degradation``).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from jobs.contract import LOWER_IS_BETTER
from mlbatch import names
from mlbatch.backends import webhook
from mlbatch.backends.appdb import schema
from mlbatch.maths import realized_metrics
from mlbatch.spec import ModelSpec
from mlbatch.stages import realized_days, registry
from mlbatch.stages.context import RunContext

log = logging.getLogger(__name__)

DEGRADED = "degraded"


def realized_metric(spec: ModelSpec) -> str:
    """The gate's metric when the published rows can measure it, else accuracy (which every
    model's predicted labels can); only the gate's own metric is compared with ``gate.min``."""
    metric = spec.train.gate.metric
    return metric if realized_metrics.measurable(metric, spec.is_binary) else "accuracy"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _worse(metric: str, value: float, bar: float) -> bool:
    return value > bar if metric in LOWER_IS_BETTER else value < bar


def realized_performance(ctx: RunContext) -> dict[str, Any]:
    spec, db = ctx.spec, ctx.env.appdb
    mon, gate = spec.monitoring, spec.train.gate
    sync_id = ctx.load_state("labels_check", "run the labels check first")["sync_id"]
    db.ensure_schema()
    first = date.fromisoformat(ctx.ds) - timedelta(days=mon.lookback_days - 1)
    p, store = schema.publish_log, ctx.env.store
    with db.connect() as conn:
        days = list(  # (ds, model_version, run_id) rows, oldest first
            conn.execute(
                select(p.c.ds, p.c.model_version, p.c.run_id)
                .where(p.c.model == spec.name, p.c.ds >= first, p.c.ds <= date.fromisoformat(ctx.ds))
                .order_by(p.c.ds)
            ).all()
        )
    key = names.realized_state_key(spec.name)
    prior = store.get_json(key) if store.exists(key) else None
    metric = realized_metric(spec)
    skipped = realized_days.skip_reason(ctx, days, prior)
    if skipped:
        log.info("%s: realized performance not measured: %s", spec.name, skipped)
        result = {"sync_id": sync_id, "metric": metric, "skipped": skipped, "days": 0, "retrain": False}
        ctx.save_state("realized", result)
        return result
    out, read = realized_days.measure_days(ctx, days, prior)
    measured: list[dict[str, Any]] = []
    for day, rows in out:
        y, pred, score = realized_days.arrays(rows)
        m = realized_metrics.measure(metric, y, pred, score, len(spec.labels.classes))
        measured.append(
            {
                "model": spec.name,
                "model_version": day.model_version,
                "ds": day.ds,
                "metric": m.metric,
                "value": m.value,
                "n_labelled": m.n,
                "ci_low": m.ci_low,
                "ci_high": m.ci_high,
                "measured_at": _now(),
                "label_sync_id": sync_id,
            }
        )
    t = schema.realized_performance
    with db.begin() as conn:
        for row in measured:
            # A day republished by another version: the old version's row no longer describes it.
            conn.execute(
                delete(t).where(t.c.model == spec.name, t.c.ds == row["ds"], t.c.model_version != row["model_version"])
            )
        db.upsert(
            conn,
            t,
            measured,
            update=["value", "n_labelled", "ci_low", "ci_high", "measured_at", "label_sync_id"],
        )
    store.put_json(key, read.pop("state"))  # after the rows: a failed upsert is measured again
    degraded = [
        r
        for r in measured
        if r["metric"] == gate.metric
        and r["value"] is not None
        and r["n_labelled"] >= mon.min_rows
        and _worse(r["metric"], r["value"], gate.min)
    ]
    for r in measured:
        log.info(
            "%s %s version %s: realized %s = %s on %d labelled rows (95%% CI %s .. %s)",
            spec.name,
            r["ds"],
            r["model_version"],
            r["metric"],
            "n/a" if r["value"] is None else f"{r['value']:.4f}",
            r["n_labelled"],
            r["ci_low"],
            r["ci_high"],
        )
    alerted = False
    if degraded and mon.alert:
        _flag(ctx, degraded)
        fresh = _not_yet_alerted(ctx, degraded)
        if fresh:
            alerted = _alert(ctx, fresh)
            if alerted:
                _mark_alerted(ctx, fresh)
        else:
            log.info("%s: every degraded day was alerted on before; no new alert", spec.name)
    result = {
        "sync_id": sync_id,
        "metric": metric,
        "days": len(measured),
        "read": read,
        "labelled": sum(r["n_labelled"] for r in measured),
        "degraded": [{"ds": r["ds"].isoformat(), "model_version": r["model_version"]} for r in degraded],
        "alerted": alerted,
        "retrain": bool(degraded) and mon.retrain_on_degradation,
    }
    # The measured days, for the step's report (mlbatch.reporting.reports.realized_reports).
    ctx.save_state("realized", {**result, "measured": [_measured_json(r) for r in measured]})
    return result


def _measured_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "ds": r["ds"].isoformat(),
        "model_version": r["model_version"],
        "metric": r["metric"],
        "value": r["value"],
        "n_labelled": r["n_labelled"],
        "ci": [r["ci_low"], r["ci_high"]],
        "label_sync_id": r["label_sync_id"],
        "measured_at": r["measured_at"].isoformat() + "Z",
    }


def degradation_message(ctx: RunContext, degraded: list[dict[str, Any]]) -> dict[str, Any]:
    """The webhook body: which version, which days, realized against offline, n and interval."""
    spec, gate = ctx.spec, ctx.spec.train.gate
    offline: dict[str, float | None] = {}
    with ctx.env.appdb.connect() as conn:
        for v in {r["model_version"] for r in degraded}:
            mv = registry.get(conn, spec.name, v)
            offline[v] = mv.value if mv else None
    days = [
        {
            "ds": r["ds"].isoformat(),
            "model_version": r["model_version"],
            "metric": r["metric"],
            "realized": round(r["value"], 4),
            "offline": offline[r["model_version"]],
            "n_labelled": r["n_labelled"],
            "ci": [r["ci_low"], r["ci_high"]],
        }
        for r in degraded
    ]
    worst = (
        min(degraded, key=lambda r: r["value"])
        if gate.metric not in LOWER_IS_BETTER
        else max(degraded, key=lambda r: r["value"])
    )
    off = offline[worst["model_version"]]
    ci = f"[{worst['ci_low']:.3f}, {worst['ci_high']:.3f}]" if worst["ci_low"] is not None else "[n/a]"
    text = (
        f"mlbatch: {spec.name} version {worst['model_version']} degraded in production: realized {gate.metric} "
        f"{worst['value']:.3f} (95% CI {ci}, n={worst['n_labelled']:,}) on {worst['ds']} vs offline "
        f"{'n/a' if off is None else f'{off:.3f}'}, below the gate's {gate.min}; "
        f"{len(degraded)} day(s): {', '.join(d['ds'] for d in days)}"
    )
    return {
        "kind": "realized_performance",
        "model": spec.name,
        "dag_id": ctx.dag_id or f"{spec.name}__labels",
        "task_id": "realized_performance",
        "run_id": ctx.run_id,
        "ds": ctx.ds,
        "gate": {"metric": gate.metric, "min": gate.min},
        "days": days,
        "text": text,
    }


def _alert(ctx: RunContext, degraded: list[dict[str, Any]]) -> bool:
    message = degradation_message(ctx, degraded)
    log.warning("%s", message["text"])
    return webhook.post(message)


def _not_yet_alerted(ctx: RunContext, degraded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Degraded rows no alert has named yet: an hourly label sync must not repeat the alarm."""
    t = schema.realized_performance
    with ctx.env.appdb.connect() as conn:
        done = {
            (r.model_version, r.ds)
            for r in conn.execute(
                select(t.c.model_version, t.c.ds).where(t.c.model == ctx.model, t.c.alerted_at.is_not(None))
            )
        }
    return [r for r in degraded if (r["model_version"], r["ds"]) not in done]


def _mark_alerted(ctx: RunContext, rows: list[dict[str, Any]]) -> None:
    t = schema.realized_performance
    with ctx.env.appdb.begin() as conn:
        for r in rows:
            conn.execute(
                t.update()
                .where(t.c.model == ctx.model, t.c.model_version == r["model_version"], t.c.ds == r["ds"])
                .values(alerted_at=_now())
            )


def _flag(ctx: RunContext, degraded: list[dict[str, Any]]) -> None:
    """Mark each degraded version (``ml_model_flags``); its registry status is unchanged."""
    t = schema.model_flags
    rows = []
    for version in sorted({r["model_version"] for r in degraded}):
        mine = [r for r in degraded if r["model_version"] == version]
        note = f"realized {mine[0]['metric']} below {ctx.spec.train.gate.min} on " + ", ".join(
            f"{r['ds'].isoformat()} ({r['value']:.3f}, n={r['n_labelled']})" for r in mine
        )
        rows.append({"model": ctx.model, "version": version, "flag": DEGRADED, "note": note, "flagged_at": _now()})
    with ctx.env.appdb.begin() as conn:
        ctx.env.appdb.upsert(conn, t, rows, update=["note", "flagged_at"])


def flags(db: Any, model: str) -> dict[str, dict[str, str]]:
    """{version: {flag: note}} of a model's flagged versions."""
    if not db.has_table(schema.model_flags.name):
        return {}
    t = schema.model_flags
    out: dict[str, dict[str, str]] = {}
    with db.connect() as conn:
        for row in conn.execute(select(t.c.version, t.c.flag, t.c.note).where(t.c.model == model)):
            out.setdefault(row.version, {})[row.flag] = row.note
    return out


def history(db: Any, model: str, version: str | None = None) -> list[dict[str, Any]]:
    """Realized rows of a model (one version's, if given), oldest day first."""
    if not db.has_table(schema.realized_performance.name):
        return []
    t = schema.realized_performance
    q = select(t).where(t.c.model == model)
    if version is not None:
        q = q.where(t.c.model_version == version)
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.ds, t.c.model_version))]
