"""The labels DAG's retraining decision: read what ``train.retrain`` needs, decide, record a request.

``decide_retrain`` runs after ``apply_labels`` on every sync. It reads (never the labels
themselves): the production model's label snapshot from the registry, the count of keys changed
since it from ``ml_label_history`` (an index range, not the label table), the last training start
from the object store, and with ``on_drift`` the last days' ``summary.json``. Its result's
``retrain`` decides whether the labels asset event, which starts the train DAG, is emitted; its
``reason`` is the sentence the log, the XCom and the run's ``retrain.json`` state show.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.maths import retrain
from mlbatch.spec.runparams import DRY_RUN
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _changed_since(conn: Any, model: str, sync_id: str | None) -> tuple[int, int]:
    """(keys changed after the snapshot of ``sync_id``, rows of that snapshot)."""
    h, s = schema.label_history, schema.label_syncs
    base = conn.execute(select(s.c.accepted, s.c.finished_at).where(s.c.sync_id == sync_id)).first()
    last_id = conn.execute(
        select(func.max(h.c.id)).where(h.c.model == model, h.c.sync_id == sync_id)
    ).scalar_one_or_none()
    after = h.c.id > last_id if last_id is not None else h.c.changed_at > (base.finished_at if base else datetime.min)
    changed = conn.execute(select(func.count(func.distinct(h.c.entity_key))).where(h.c.model == model, after))
    return int(changed.scalar_one()), int(base.accepted) if base else 0


def day_drift(summary: dict[str, Any]) -> tuple[float, str] | None:
    """A day's largest PSI and what drifted: the predictions against the day before, or a feature
    against the training data (both kept in the day's summary.json); None when neither was measured."""
    found: list[tuple[float, str]] = []
    score_psi = (summary.get("drift") or {}).get("score_psi")
    if score_psi is not None:
        found.append((float(score_psi), "predictions"))
    top = (summary.get("feature_drift") or {}).get("max")
    if top:
        found.append((float(top["psi"]), f"feature {top['feature']}"))
    return max(found) if found else None


def _drifted_days(ctx: RunContext, version: str | None) -> list[tuple[str, float, str]]:
    """The production version's consecutive drifted days up to the run's day, newest first."""
    policy = ctx.spec.train.retrain.on_drift
    if policy is None or version is None:
        return []
    store, day, found = ctx.env.store, date.fromisoformat(ctx.ds), []
    for back in range(policy.days):
        ds = (day - timedelta(days=back)).isoformat()
        key = names.summary_key(ctx.model, ds)
        summary = store.get_json(key) if store.exists(key) else None
        if summary is None or version not in summary.get("model_version", []):
            break
        worst = day_drift(summary)
        if worst is None or worst[0] <= policy.psi:
            break
        found.append((ds, *worst))
    return found


def inputs(ctx: RunContext, now: datetime | None = None) -> retrain.Inputs:
    """Everything :func:`mlbatch.maths.retrain.decide` needs, read from the app DB and the store."""
    db, store, model = ctx.env.appdb, ctx.env.store, ctx.model
    latest = prod_sync = None
    changed = rows = 0
    prod = None
    if db.has_table(schema.label_syncs.name):
        s = schema.label_syncs
        prod = registry.production(db, model)
        prod_sync = (prod.lineage or {}).get("label_sync_id") if prod else None
        with db.connect() as conn:
            latest = conn.execute(
                select(s.c.sync_id)
                .where(s.c.model == model, s.c.snapshot_uri.is_not(None))
                .order_by(s.c.finished_at.desc(), s.c.sync_id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if prod_sync:
                changed, rows = _changed_since(conn, model, prod_sync)
    key = names.last_training_key(model)
    last = store.get_json(key) if store.exists(key) else {}
    return retrain.Inputs(
        now=now or _now(),
        latest_sync_id=latest,
        production_version=prod.version if prod else None,
        production_sync_id=prod_sync,
        production_rows=rows,
        changed_rows=changed,
        last_started_at=datetime.fromisoformat(last["started_at"]) if last.get("started_at") else None,
        last_sync_id=last.get("label_sync_id"),
        drifted_days=_drifted_days(ctx, prod.version if prod else None),
    )


def decide_retrain(ctx: RunContext) -> dict[str, Any]:
    """Decide whether this sync starts training; record the request when it does (not in a dry run)."""
    policy = ctx.spec.train.retrain
    decision = retrain.decide(policy, inputs(ctx))
    result = {**decision.as_dict(), "model": ctx.model}
    log.info("%s: %s training: %s", ctx.model, "start" if decision.retrain else "no", decision.reason)
    ctx.save_state("retrain", result)
    if decision.retrain and not DRY_RUN.get(ctx.params):
        # The request counts as the training's start for min_interval: the next sync must not ask
        # again before the train run it starts has begun.
        record_training_start(ctx, decision.sync_id, by=f"{ctx.dag_id or 'labels'} run {ctx.run_id}")
    return result


def record_training_start(ctx: RunContext, sync_id: str | None, by: str) -> None:
    """Note a training start (train run) or request (labels run) for ``min_interval``."""
    ctx.env.store.put_json(
        names.last_training_key(ctx.model),
        {"started_at": _now().isoformat(), "run_id": ctx.run_id, "label_sync_id": sync_id, "by": by},
    )
