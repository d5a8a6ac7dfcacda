"""A model's runs of a day, found from the state they left in the object store.

``mlbatch run MODEL --ds D --stage publish`` on a day another run scored (a score DAG run, an
earlier CLI run with another ``--run-id``) publishes that run's predictions: the run that passed
the prediction gate for the day (its ``prediction_profile.json``) and holds the model it used.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from mlbatch import names
from mlbatch.backends.appdb import schema
from mlbatch.errors import UsageError
from mlbatch.stages.context import RUN_STATE, RunContext
from mlbatch.stages.score import PROFILE_STATE


class NoScoredRun(UsageError, LookupError):
    """No run, or more than one, scored the day; the message says which and what to do."""


def _known_run_ids(ctx: RunContext) -> list[str]:
    """Run ids the day's publish log and summary name (runs that wrote no ``run.json``)."""

    ids: list[str] = []
    store, db = ctx.env.store, ctx.env.appdb
    if db.has_table(schema.publish_log.name):
        p = schema.publish_log
        with db.connect() as conn:
            row = conn.execute(p.select().where(p.c.model == ctx.model, p.c.ds == date.fromisoformat(ctx.ds))).first()
        ids += [row.run_id] if row else []
    summary = names.summary_key(ctx.model, ctx.ds)
    if store.exists(summary):
        ids.append(store.get_json(summary).get("run_id"))
    return [i for i in ids if i]


def scored_run(ctx: RunContext) -> str:
    """The id of the run that scored ``ctx``'s day (its predictions passed the prediction gate)."""

    store = ctx.env.store
    prefix = names.runs_prefix(ctx.model, ctx.ds)
    gated = sorted(
        k.removeprefix(prefix).split("/")[0] for k in store.list(prefix) if k.endswith(f"/{PROFILE_STATE}.json")
    )
    by_key: dict[str, str | None] = {key: None for key in gated}
    for key in gated:
        note = names.state_key(ctx.model, ctx.ds, key, RUN_STATE)
        by_key[key] = store.get_json(note)["run_id"] if store.exists(note) else None
    for run_id in _known_run_ids(ctx):
        key = names.run_key(run_id)
        if key in by_key:
            by_key[key] = run_id
            if len(gated) > 1:  # the run the day was published from wins
                return run_id
    found = [(key, run_id) for key, run_id in by_key.items() if run_id]
    if len(found) == 1:
        return found[0][1]
    what = ", ".join(k for k in gated) or "none"
    raise NoScoredRun(
        f"{ctx.model} {ctx.ds}: "
        + (
            f"several runs scored the day ({what}); name one with --run-id"
            if len(found) > 1
            else f"no run scored the day (runs that passed the prediction gate: {what}); run --stage score first"
        )
    )


def publishing_context(ctx: RunContext, stages: list[str]) -> tuple[RunContext, Any]:
    """The context publish/export run in: ``ctx`` when this run resolved its own model (or scores
    now), else the run that scored the day (and its id, for the message)."""
    if "score" in stages or not {"publish", "export"} & set(stages):
        return ctx, None
    if ctx.env.store.exists(ctx.state_key("model")):
        return ctx, None
    run_id = scored_run(ctx)
    return replace(ctx, run_id=run_id), run_id
