"""Features stage: the model's warehouse query, unloaded to parquet parts + manifest, then gated.

Each run unloads into its own prefix. The manifest is written last and is the only thing
readers trust: a prefix without one is a failed attempt, cleared and written again on retry.

The gate reads the unload once, streaming: rows, nulls per column, key uniqueness and, at
scoring, the columns against the production model's ``feature_schema.json`` and each numeric
feature's population stability index against the model's training data. The training side is
``models/<model>/<version>/feature_profile.json``, computed the first time a scoring run needs
it from the training unload named in the model's ``lineage.json`` (``features_manifest``), then
reused by every later scoring run of that version.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pyarrow as pa

from mlbatch.backends.store import ObjectStore
from mlbatch.backends.warehouse.sql import render_spec_query
from mlbatch.features.profile import PROFILE_VERSION, BinCounter, build_profile
from mlbatch.features.reader import iter_batches, read_manifest
from mlbatch.maths import drift, gates
from mlbatch.maths.keycount import repeated_detail, repeated_keys
from mlbatch.spec.query import Stage
from mlbatch.stages.context import Purpose, RunContext
from mlbatch.stages.external import WarehouseStatement

log = logging.getLogger(__name__)

QUERY_STAGE: dict[Purpose, Stage] = {"train": "training", "score": "scoring"}
PROFILE_FILE = "feature_profile.json"
GATE_READ_THREADS = 2
GATE_READ_AHEAD = 64 * 2**20
FEATURE_DRIFT_STATE = "feature_drift"  # the run state the score gate keeps: PSI per feature vs training


class Unload(WarehouseStatement):
    """The run's unload of the training or scoring query: a Redshift UNLOAD (waited for in the
    worker or the triggerer, cancelled on kill) or the embedded warehouse's, run in-process."""

    def __init__(self, ctx: RunContext, purpose: Purpose):
        super().__init__(ctx)
        self.purpose = purpose
        self.prefix, self.manifest_key = ctx.unload_prefix(purpose), ctx.manifest_key(purpose)
        self.what = f"UNLOAD into {self.prefix}"
        self.cost_name = f"statement__{purpose}_unload"

    def start(self) -> dict[str, Any] | None:
        store = self.ctx.env.store
        if store.exists(self.manifest_key):
            log.info("%s: already unloaded by this run; not unloading again", self.prefix)
            return self._summary()
        store.delete_prefix(self.prefix)  # a failed attempt's parts are never read: start clean
        query = render_spec_query(self.ctx.spec, QUERY_STAGE[self.purpose], self.ctx.ds)
        return self.submit(self.ctx.env.warehouse.start_unload(query, store, self.prefix))

    def finish(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        statement_id = self.check(event)
        self.ctx.env.warehouse.finish_unload(self.ctx.env.store, self.prefix, statement_id)
        self.record_statement_seconds(statement_id)
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        store = self.ctx.env.store
        manifest = read_manifest(store, store.uri(self.manifest_key))
        return {
            "manifest_uri": store.uri(self.manifest_key),
            "rows": manifest.record_count,
            "parts": len(manifest.entries),
            "columns": len(manifest.columns),
        }


def scan(manifest_uri: str, key: str, bins: BinCounter | None = None) -> dict[str, Any]:
    """One streaming pass: rows, nulls per column, repeated keys and (given ``bins``) histograms.

    Every column is dropped with its batch; the keys go to :func:`mlbatch.maths.keycount.repeated_keys`,
    which counts them in bounded memory (spilling to disk), whatever the size of the unload.
    """
    rows = 0
    nulls: dict[str, int] = {}  # null count by column

    def account(batch: pa.RecordBatch) -> None:
        nonlocal rows
        rows += batch.num_rows
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            nulls[name] = nulls.get(name, 0) + col.null_count
        if bins is not None:
            bins.add(batch)

    # Two reader threads and 64 MB ahead: each thread holds a whole compressed part and a decoded
    # row group, and the gate's own work is light. On a 10M-row unload (20 parts of 31 columns)
    # the reader's defaults (4 threads, 256 MB) peaked at 1.0-1.3 GB, 2 threads and 128 MB at
    # 0.81-0.87 GB, no slower (2.5 against 2.8 s). In bench_dag's 10M gate task (8M rows, 12
    # parts of 41 columns, the training profile built too) 128 MB ahead peaked at 954-1,022 MiB,
    # 64 MB at 847-859 MiB, in the same 26-30 s.
    batches = iter_batches(manifest_uri, threads=GATE_READ_THREADS, max_bytes_in_flight=GATE_READ_AHEAD)
    repeated, examples = repeated_keys(batches, key, account)
    return {
        "rows": rows,
        "nulls": nulls,
        "repeated_keys": repeated,
        "examples": examples,
        "null_keys": nulls.get(key, 0),
    }


def features_gate(ctx: RunContext, purpose: Purpose) -> dict[str, Any]:
    spec, store = ctx.spec, ctx.env.store
    manifest_uri = store.uri(ctx.manifest_key(purpose))
    manifest = read_manifest(store, manifest_uri)
    key = spec.entity.key
    gate = f"{ctx.model}.features.{purpose}"
    if key not in manifest.columns:
        raise gates.GateFailed(
            gate, [gates.Check("key_column", False, manifest.columns, f"contains {key!r}", manifest_uri)]
        )
    checks: list[gates.Check] = []
    training: dict[str, Any] | None = None
    if purpose == "score":
        model = ctx.load_state("model", "the score DAG resolves the production model first")
        checks.append(_schema_check(ctx, model, manifest.columns))
        training = training_profile(store, model["artifact_uri"], key)
    features = [c for c in (training or {}).get("features", {}) if c in manifest.columns]
    bins = BinCounter({c: training["features"][c]["cuts"] for c in features}) if training else None
    p = scan(manifest_uri, key, bins)
    checks += [
        gates.at_least("rows", p["rows"], spec.features.checks.min_rows, manifest_uri),
        gates.equal("rows_match_manifest", p["rows"], manifest.record_count),
        gates.equal("null_keys", p["null_keys"], 0, key),
        gates.equal("duplicate_keys", p["repeated_keys"], 0, repeated_detail(key, p["examples"])),
    ]
    limit = spec.features.checks.max_null_fraction
    for name in manifest.columns:
        fraction = p["nulls"].get(name, 0) / p["rows"] if p["rows"] else 0.0
        checks.append(gates.at_most(f"null_fraction[{name}]", fraction, limit))
    if training is not None and bins is not None:
        psis = {name: drift.psi(training["features"][name]["proportions"], bins.proportions(name)) for name in features}
        # Kept before the gate decides: the day's summary carries it and train.retrain.on_drift
        # counts a day whose feature PSI passed its level (mlbatch.stages.retrain).
        ctx.save_state(FEATURE_DRIFT_STATE, feature_drift(psis, model["version"]))
        checks += _drift_checks(ctx, psis, model["version"])
    summary = gates.evaluate(gate, checks)
    return {"rows": p["rows"], "passed": summary["passed"]}


def feature_drift(psis: dict[str, float], version: str) -> dict[str, Any]:
    """The day's PSI per numeric feature against the training data of ``version``, and the largest."""
    finite = {name: round(value, 6) for name, value in psis.items() if not math.isnan(value)}
    top = max(finite.items(), key=lambda kv: kv[1], default=None)
    return {
        "reference": f"training data of {version}",
        "model_version": version,
        "psi": finite,
        "max": {"feature": top[0], "psi": top[1]} if top else None,
    }


def _drift_checks(ctx: RunContext, psis: dict[str, float], version: str) -> list[gates.Check]:
    """PSI per numeric feature: above ``psi_fail`` blocks, above ``psi_warn`` logs a warning."""
    cfg = ctx.spec.features.checks
    checks = []
    for name, value in psis.items():
        detail = f"scoring {ctx.ds} vs training data of {version}"
        if cfg.psi_warn < value <= cfg.psi_fail:
            log.warning(
                "%s: feature %s drifted: PSI %.4f above psi_warn %s (%s)", ctx.model, name, value, cfg.psi_warn, detail
            )
            detail += f"; above psi_warn {cfg.psi_warn}"
        elif math.isnan(value):  # NaN fails the check below: a side without rows cannot be compared
            detail += "; one side has no rows, so no distribution to compare"
        checks.append(gates.at_most(f"psi[{name}]", value, cfg.psi_fail, detail))
    return checks


def training_profile(store: ObjectStore, artifact_uri: str, key: str) -> dict[str, Any]:
    """The model version's training profile: read it, or build it once from its training unload."""
    prefix = store.key(artifact_uri.rstrip("/") + "/")
    profile_key = prefix + PROFILE_FILE
    if store.exists(profile_key):
        cached: dict[str, Any] = store.get_json(profile_key)
        if cached.get("version") == PROFILE_VERSION:
            return cached
    lineage = store.get_json(prefix + "lineage.json")
    source = lineage.get("features_manifest")
    if not source:
        raise KeyError(f"{store.uri(prefix + 'lineage.json')} names no features_manifest to profile")
    try:
        # Within the gate's task: the gate's own reader settings bound its memory here too.
        profile = build_profile(source, exclude=[key], threads=GATE_READ_THREADS, max_bytes_in_flight=GATE_READ_AHEAD)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"cannot profile the training data of {artifact_uri} for the drift check: {exc}"
        ) from exc
    store.put_json(profile_key, profile)
    log.info("profiled %d training rows of %s into %s", profile["rows"], source, store.uri(profile_key))
    return profile


def _schema_check(ctx: RunContext, model: dict[str, Any], columns: list[str]) -> gates.Check:
    """Scoring rows must carry exactly the features the production model was trained on."""
    schema = ctx.env.store.get_json(ctx.env.store.key(model["artifact_uri"]) + "feature_schema.json")
    expected = [ctx.spec.entity.key] + [c["name"] for c in schema]
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    detail = f"missing {missing}, unexpected {extra}" if missing or extra else "same columns"
    return gates.Check(
        "feature_schema",
        not missing and not extra,
        f"{len(columns)} columns",
        "the model's feature_schema.json",
        detail,
    )
