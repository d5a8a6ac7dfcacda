"""Train stage: launch the training job, register the version, gate its promotion.

A version is named by the day and a hash of what determines the model (label snapshot, query,
family, parameters, code version): the same inputs give the same version, so a rerun registers
nothing new and a retry finds the job's success marker instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from jobs.contract import LOWER_IS_BETTER, TrainConfig
from mlbatch import __version__, names
from mlbatch.backends.launchers import JobId, JobRequest
from mlbatch.backends.warehouse.sql import render_spec_query
from mlbatch.maths import gates
from mlbatch.spec import ModelSpec
from mlbatch.spec.runparams import FORCE_RETRAIN
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.external import LaunchedJob
from mlbatch.stages.labels import latest_snapshot, snapshot_of
from mlbatch.stages.retrain import record_training_start

SEED = 7


def code_version() -> str:
    """The orchestrating code's version (the Airflow image's content hash): part of what names a
    model version. The job records its own image and code version in ``lineage.json``."""
    return os.environ.get("MLBATCH_CODE_VERSION", __version__)


def run_labels(ctx: RunContext) -> dict[str, Any]:
    """The label snapshot this run trains on, fixed the first time the run asks.

    A run started by a label change (an asset event of ``mlbatch.<model>.labels``) trains on the
    labels of that change, even if analysts changed them again before it ran; any other run on
    the newest snapshot at its start. Retries and later tasks of the run read the fixed choice.
    """
    key = ctx.state_key("labels")
    if ctx.env.store.exists(key):
        chosen_before: dict[str, Any] = ctx.env.store.get_json(key)
        return chosen_before
    event = ctx.triggered_by.get("labels") or {}
    chosen = snapshot_of(ctx, event["sync_id"]) if event.get("sync_id") else latest_snapshot(ctx)
    ctx.save_state("labels", chosen)
    # train.retrain's min_interval counts from here: the start of the last training run.
    record_training_start(ctx, chosen["sync_id"], by=f"{ctx.dag_id or 'train'} run {ctx.run_id}")
    return chosen


class TrainJob(LaunchedJob):
    """The training job of a run: its version is named by what determines the model."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.request, self.version, self.prefix = _train_request(ctx)

    def done(self, reused: bool) -> dict[str, Any]:
        store = self.ctx.env.store
        state = {"version": self.version, "artifact_uri": store.uri(self.prefix), "reused": reused}
        self.ctx.save_state("train", state)
        return state


def _version_and_config(ctx: RunContext, labels: dict[str, Any], manifest_uri: str) -> tuple[TrainConfig, str, str]:
    """The version this run trains (named by what determines the model), its job config and prefix."""
    spec = ctx.spec
    query = render_spec_query(spec, "training", ctx.ds)
    determinants = {
        "labels": labels["sync_id"],
        "query": hashlib.sha256(query.encode()).hexdigest(),
        "family": spec.train.family,
        "params": spec.train.params,
        "code": code_version(),
        "seed": SEED,
    }
    if FORCE_RETRAIN.get(ctx.params) or "retrain" in ctx.triggered_by:
        # A fresh version although nothing changed: the run id joins the hash (a retry of the
        # same run still finds its own version and success marker). A retrain request (the
        # labels DAG saw production degrade on late labels) asks for the same.
        determinants["forced_by_run"] = ctx.run_id
    digest = hashlib.sha256(json.dumps(determinants, sort_keys=True).encode()).hexdigest()[:8]
    version = f"{ctx.ds.replace('-', '')}-{digest}"
    prefix = names.model_prefix(ctx.model, version)
    lineage = {
        "model": spec.name,
        "version": version,
        "ds": ctx.ds,
        "run_id": ctx.run_id,
        "label_sync_id": labels["sync_id"],
        "labels_uri": labels["uri"],
        "features_manifest": manifest_uri,
        "query_sha256": determinants["query"],
        "spec": str(spec.path),
    }
    return job_config(spec, version, lineage), version, prefix


def job_config(spec: ModelSpec, version: str, lineage: dict[str, Any]) -> TrainConfig:
    """The train job's config (jobs.contract), checked here as the job will check it."""
    return TrainConfig(
        model=spec.name,
        version=version,
        entity_key=spec.entity.key,
        classes=list(spec.labels.classes),
        family=spec.train.family,
        params=dict(spec.train.params),
        metric=spec.train.gate.metric,
        seed=SEED,
        lineage=lineage,
    )


def _train_request(ctx: RunContext) -> tuple[JobRequest, str, str]:
    spec, store = ctx.spec, ctx.env.store
    labels = run_labels(ctx)
    manifest_uri = store.uri(ctx.manifest_key("train"))
    config, version, prefix = _version_and_config(ctx, labels, manifest_uri)
    config_uri = store.put_json(prefix + "job_config.json", config.to_dict())
    request = JobRequest(
        job_id=JobId(ctx.dag_id or f"{spec.name}__train", "train", ctx.run_id),
        module="jobs.train",
        args=[
            "--config",
            config_uri,
            "--features",
            manifest_uri,
            "--labels",
            labels["uri"],
            "--output",
            store.uri(prefix),
        ],
        model=spec.name,
        success_uri=store.uri(prefix + "_SUCCESS"),
        gpu=spec.train.resources.gpu,
        vcpu=spec.train.resources.vcpu,
        memory_gib=spec.train.resources.memory_gib,
    )
    return request, version, prefix


def register(ctx: RunContext) -> dict[str, Any]:
    st = ctx.load_state("train", "run the train stage first")
    store, gate = ctx.env.store, ctx.spec.train.gate
    prefix = store.key(st["artifact_uri"])
    metrics = store.get_json(prefix + "metrics.json")
    if gate.metric not in metrics:
        raise KeyError(f"{st['artifact_uri']}metrics.json has no {gate.metric!r} (the spec's gate metric)")
    ctx.env.appdb.ensure_schema()
    mv = registry.register(
        ctx.env.appdb,
        {
            "model": ctx.model,
            "version": st["version"],
            "family": ctx.spec.train.family,
            "metric": gate.metric,
            "value": metrics[gate.metric],
            "metrics": metrics,
            "artifact_uri": st["artifact_uri"],
            "lineage": store.get_json(prefix + "lineage.json"),
        },
    )
    return {"version": mv.version, "status": mv.status, gate.metric: mv.value}


def _candidate(ctx: RunContext) -> tuple[registry.ModelVersion, registry.ModelVersion | None]:
    """The version this run trained, as registered, and the production version (if any)."""
    st = ctx.load_state("train", "run the train stage first")
    with ctx.env.appdb.connect() as conn:
        cand = registry.get(conn, ctx.model, st["version"])
    if cand is None:
        raise LookupError(f"{ctx.model} version {st['version']} is not registered; run register first")
    return cand, registry.production(ctx.env.appdb, ctx.model)


def model_gate(ctx: RunContext) -> dict[str, Any]:
    """Promote the candidate if it clears the spec's bar and does not regress production."""
    db, gate = ctx.env.appdb, ctx.spec.train.gate
    cand, prod = _candidate(ctx)
    lower = gate.metric in LOWER_IS_BETTER
    bound = gates.at_most if lower else gates.at_least
    checks = [bound(gate.metric, cand.value, gate.min, f"candidate {cand.version}")]
    if prod is not None and prod.version != cand.version:
        allowed = prod.value + gate.max_regression if lower else prod.value - gate.max_regression
        checks.append(
            bound(
                f"{gate.metric}_vs_production",
                cand.value,
                allowed,
                f"production {prod.version} has {prod.value:.4f}, max_regression {gate.max_regression}",
            )
        )
    try:
        summary = gates.evaluate(f"{ctx.model}.model", checks)
    except gates.GateFailed as exc:
        registry.decide(db, ctx.model, cand.version, "rejected", str(exc))
        raise
    verdict = "; ".join(c.line() for c in checks)
    if cand.status == "production":
        return {"version": cand.version, "promoted": True, gate.metric: cand.value, "passed": summary["passed"]}
    if ctx.spec.train.approval.required:
        registry.decide(db, ctx.model, cand.version, "pending_approval", f"{verdict}; waiting for approval")
        return {
            "version": cand.version,
            "promoted": False,
            "pending_approval": True,
            gate.metric: cand.value,
            "passed": summary["passed"],
        }
    registry.decide(db, ctx.model, cand.version, "production", verdict)
    return {"version": cand.version, "promoted": True, gate.metric: cand.value, "passed": summary["passed"]}


def approval_request(ctx: RunContext, report_url: str | None = None) -> dict[str, Any]:
    """What a person sees before approving this run's candidate: subject and a Markdown body
    comparing it with production (gate metric, the other held-out metrics, rows, label sync)."""
    gate = ctx.spec.train.gate
    cand, prod = _candidate(ctx)
    lineage = cand.lineage
    names = [gate.metric] + sorted(
        k
        for k, v in cand.metrics.items()
        if k not in (gate.metric, "value") and isinstance(v, int | float) and not isinstance(v, bool)
    )

    def cell(mv: registry.ModelVersion | None, name: str) -> str:
        value = mv.metrics.get(name) if mv is not None else None
        return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))

    header = (
        f"| | candidate `{cand.version}` | production `{prod.version}` |"
        if prod
        else (f"| | candidate `{cand.version}` | production (none yet) |")
    )
    rows = [header, "|---|---:|---:|"]
    rows += [
        f"| {'**' + n + '** (gate)' if n == gate.metric else n} | {cell(cand, n)} | {cell(prod, n)} |" for n in names
    ]
    bar = "at most" if gate.metric in LOWER_IS_BETTER else "at least"
    body = "\n".join(
        [
            f"The model gate passed `{ctx.model}` version `{cand.version}` ({cand.family}): "
            f"`{gate.metric}` {bar} {gate.min}, regression within {gate.max_regression} of production.",
            "",
            *rows,
            "",
            f"- label sync: `{lineage.get('label_sync_id', '?')}`; run `{ctx.run_id}`",
            f"- gate: {cand.reason or '-'}",
            f"- report: [report.html]({report_url})" if report_url else "- report: not written",
            "",
            "**Approve** puts the candidate in production and retires the champion; **Reject** keeps the "
            f"champion. No answer within {ctx.spec.train.approval.timeout_hours:g} h rejects it.",
        ]
    )
    return {
        "version": cand.version,
        "subject": f"Promote {ctx.model} {cand.version}? {gate.metric} {cell(cand, gate.metric)} "
        + (f"vs production {cell(prod, gate.metric)}" if prod else "(no production version yet)"),
        "body": body,
    }
