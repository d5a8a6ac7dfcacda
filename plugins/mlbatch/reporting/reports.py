"""Run reports for people: an HTML page per trained version, a JSON summary per scored day.

* ``models/<model>/<version>/report.html``: metrics, the top 20 features by importance, ROC/PR
  curves, confusion matrix, the model gate's verdicts and the lineage, in one self-contained file
  (images inlined), written after the model gate whether it promoted or rejected the version.
* ``predictions/<model>/<ds>/summary.json``: counts per label, the score distribution and its
  drift against the latest earlier day that has a summary (population stability index).

Called by the DAG tasks after their stage (``mlbatch.airflow.dag_factory``; a step names its report, one
of ``mlbatch.airflow.pipeline.REPORTS``): a report that cannot be written for an I/O reason never changes
a task's outcome, one that fails by a bug fails the task (``StageOperator._write_report``).

Curves: ``roc.png``/``pr.png`` from the train job when present, else an SVG drawn from curve
points in ``metrics.json`` (``roc_curve: {fpr, tpr}``, ``pr_curve: {recall, precision}``), else a
note saying neither exists.
"""

from __future__ import annotations

import base64
from typing import Any

import jinja2

from jobs.contract import LOWER_IS_BETTER
from mlbatch import names
from mlbatch.reporting import costs
from mlbatch.reporting.summary import scoring_summary
from mlbatch.stages import registry
from mlbatch.stages.context import RunContext
from mlbatch.stages.realized import history

__all__ = ["realized_reports", "scoring_summary", "training_report", "version_report"]

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

_TRAINING = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ model }} {{ version }}</title>
<style>
 body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}
 table{border-collapse:collapse;margin:.5em 0 1.5em} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
 th{background:#f3f3f3} .ok{color:#176317} .fail{color:#a11} .num{text-align:right;font-variant-numeric:tabular-nums}
 .note{color:#666;font-style:italic} figure{display:inline-block;margin:0 1em 1em 0}
 .bar{display:inline-block;height:.8em;background:#1f5fbf}
</style></head><body>
<h1>{{ model }} <code>{{ version }}</code></h1>
<p>Status <b class="{{ 'ok' if status == 'production' else 'fail' if status == 'rejected' else '' }}">{{ status }}</b>
 &middot; {{ family }} &middot; gate metric <b>{{ metric }} = {{ "%.4f"|format(value) }}</b>
 &middot; trained for ds {{ lineage.get("ds", "?") }} in run <code>{{ lineage.get("run_id", "?") }}</code></p>
<p>Cost: {{ cost }}</p>

<h2>Model gate</h2>
<p>Bar: {{ metric }} {{ ">=" if not lower else "<=" }} {{ gate.min }}, no worse than production by more than
 {{ gate.max_regression }}.</p>
{% if verdicts %}<table><tr><th>verdict</th><th>check</th></tr>
{% for ok, line in verdicts %}<tr><td class="{{ 'ok' if ok else 'fail' }}">{{ "pass" if ok else "FAIL" }}</td>
<td>{{ line }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">The model gate has not decided on this version yet.</p>{% endif %}

<h2>Held-out metrics</h2>
<table><tr><th>metric</th><th>value</th></tr>
{% for name, v in scalars %}<tr><td>{{ name }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</table>

<h2>Feature importance</h2>
{% if importance %}<p>{{ importance.title }}{% if importance.shown < importance.total %}:
 the top {{ importance.shown }} of {{ importance.total }} features{% endif %} ({{ importance.source }}).</p>
<table><tr><th>feature</th><th>{{ importance.label }}</th>
{% if importance.spread %}<th>&plusmn; sd</th>{% endif %}<th></th></tr>
{% for f in importance.rows %}<tr><td><code>{{ f.feature }}</code></td><td class="num">{{ f.value }}</td>
{% if importance.spread %}<td class="num">{{ f.std }}</td>{% endif %}
<td><span class="bar" style="width:{{ f.width }}px"></span></td></tr>
{% endfor %}</table>
{% else %}<p class="note">{{ importance_note }}</p>{% endif %}

<h2>Curves</h2>
{% for c in curves %}<figure>{% if c.png %}<img alt="{{ c.title }}" width="360"
 src="data:image/png;base64,{{ c.png }}">{% else %}<svg xmlns="http://www.w3.org/2000/svg" width="{{ c.size }}"
 height="{{ c.size }}"><rect x="{{ c.pad }}" y="{{ c.pad }}" width="{{ c.size - 2 * c.pad }}"
 height="{{ c.size - 2 * c.pad }}" fill="none" stroke="#444"/>{% if c.diagonal %}<line x1="{{ c.pad }}"
 y1="{{ c.size - c.pad }}" x2="{{ c.size - c.pad }}" y2="{{ c.pad }}" stroke="#aaa" stroke-dasharray="4"/>{% endif %}
<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{{ c.points }}"/></svg>{% endif %}
<figcaption>{{ c.title }} ({{ c.source }})</figcaption></figure>{% endfor %}
{% if not curves %}<p class="note">No ROC/PR plot: the train job wrote no roc.png/pr.png and metrics.json holds
 no curve points{% if task != "binary" %} (curves apply to binary models){% endif %}.</p>{% endif %}

<h2>Confusion matrix</h2>
{% if confusion %}<p>Rows: true class; columns: predicted ({{ confusion.source }}).</p>
<table><tr><th></th>{% for c in confusion.classes %}<th>{{ c }}</th>{% endfor %}</tr>
{% for c, row in confusion.rows %}<tr><th>{{ c }}</th>{% for n in row %}<td class="num">{{ "{:,}".format(n) }}</td>
{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">Not available: metrics.json has no confusion_matrix and not the counts to derive one.</p>
{% endif %}

<h2>Realized performance (late labels)</h2>
{% if realized %}<p>Each published day against the labels that arrived after this version was trained
 ({{ realized.metric }}, 95% interval; dashed: offline {{ realized.offline_text }}, red: the gate's {{ gate.min }}).</p>
{% if realized.plot %}<figure><svg xmlns="http://www.w3.org/2000/svg" width="{{ realized.plot.w }}"
 height="{{ realized.plot.h }}"><rect x="{{ realized.plot.pad }}" y="{{ realized.plot.pad }}"
 width="{{ realized.plot.w - 2 * realized.plot.pad }}" height="{{ realized.plot.h - 2 * realized.plot.pad }}"
 fill="none" stroke="#444"/>{% for b in realized.plot.bars %}<line x1="{{ b.x }}" y1="{{ b.lo }}" x2="{{ b.x }}"
 y2="{{ b.hi }}" stroke="#9db8e0" stroke-width="3"/>{% endfor %}{% if realized.plot.offline is not none %}<line
 x1="{{ realized.plot.pad }}" y1="{{ realized.plot.offline }}" x2="{{ realized.plot.w - realized.plot.pad }}"
 y2="{{ realized.plot.offline }}" stroke="#666" stroke-dasharray="4"/>{% endif %}<line x1="{{ realized.plot.pad }}"
 y1="{{ realized.plot.bar }}" x2="{{ realized.plot.w - realized.plot.pad }}" y2="{{ realized.plot.bar }}"
 stroke="#a11"/><polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{{ realized.plot.points }}"/>
{% for d in realized.plot.dots %}<circle cx="{{ d.x }}" cy="{{ d.y }}" r="3.5"
 fill="{{ '#a11' if d.below else '#1f5fbf' }}"/>
{% endfor %}
</svg><figcaption>{{ realized.metric }} per day, {{ realized.plot.first }} .. {{ realized.plot.last }}
 (y axis {{ realized.plot.ymin }} .. {{ realized.plot.ymax }})</figcaption></figure>{% endif %}
<table><tr><th>day</th><th>{{ realized.metric }}</th><th>95% interval</th><th>labelled rows</th><th>label sync</th></tr>
{% for r in realized.rows %}<tr><td>{{ r.ds }}</td><td class="num {{ 'fail' if r.below else '' }}">{{ r.value }}</td>
<td class="num">{{ r.ci }}</td><td class="num">{{ "{:,}".format(r.n) }}</td><td><code>{{ r.sync }}</code></td></tr>
{% endfor %}</table>
{% else %}<p class="note">No late labels yet for the days this version published.</p>{% endif %}

<h2>Lineage</h2>
<table>{% for k, v in lineage|dictsort %}<tr><th>{{ k }}</th><td><code>{{ v }}</code></td></tr>{% endfor %}</table>
<p class="note">Artifacts: <code>{{ artifact_uri }}</code></p>
</body></html>
"""
)


def _scalars(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name, v in sorted(metrics.items()):
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out.append((name, f"{v:,}" if isinstance(v, int) else f"{v:.4f}"))
    return out


def _verdicts(reason: str | None) -> list[tuple[bool, str]]:
    """The gate's check lines from the registry's decision reason (``Check.line()`` text)."""
    lines = [p.strip() for chunk in (reason or "").split("\n") for p in chunk.split("; ")]
    checks = [(line.startswith("ok"), line.removeprefix("ok").removeprefix("FAIL").strip()) for line in lines]
    return [(ok, text) for (ok, text), line in zip(checks, lines, strict=True) if line.startswith(("ok", "FAIL"))]


SVG_SIZE, SVG_PAD = 240, 20


def _svg_points(xs: list[float], ys: list[float]) -> str:
    """Curve points in [0, 1]² as SVG polyline coordinates (no plotting library needed)."""
    span = SVG_SIZE - 2 * SVG_PAD
    step = max(1, len(xs) // 500)  # a few hundred points draw the same curve
    pairs = list(zip(xs, ys, strict=True))[::step]
    return " ".join(f"{SVG_PAD + x * span:.1f},{SVG_SIZE - SVG_PAD - y * span:.1f}" for x, y in pairs)


def _curves(ctx: RunContext, prefix: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    store = ctx.env.store
    out: list[dict[str, Any]] = []  # the template's curves
    for png, title, key, (xk, yk) in (
        ("roc.png", "ROC", "roc_curve", ("fpr", "tpr")),
        ("pr.png", "precision-recall", "pr_curve", ("recall", "precision")),
    ):
        if store.exists(prefix + png):
            data = base64.b64encode(store.get_bytes(prefix + png)).decode()
            out.append({"title": title, "source": png, "png": data})
        elif isinstance(metrics.get(key), dict) and xk in metrics[key] and yk in metrics[key]:
            out.append(
                {
                    "title": title,
                    "source": f"metrics.json {key}",
                    "png": None,
                    "points": _svg_points(metrics[key][xk], metrics[key][yk]),
                    "diagonal": key == "roc_curve",
                    "size": SVG_SIZE,
                    "pad": SVG_PAD,
                }
            )
    return out


def _confusion(metrics: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
    if "confusion_matrix" in metrics:
        cm = metrics["confusion_matrix"]
        return {"classes": classes, "rows": list(zip(classes, cm, strict=False)), "source": "metrics.json"}
    needed = ("n_test", "positive_rate", "precision", "recall")
    if len(classes) != 2 or not all(isinstance(metrics.get(k), int | float) for k in needed):
        return None
    # Binary: the test-set counts follow from n_test, the positive rate, precision and recall.
    pos = round(metrics["n_test"] * metrics["positive_rate"])
    neg = metrics["n_test"] - pos
    tp = round(metrics["recall"] * pos)
    predicted_pos = round(tp / metrics["precision"]) if metrics["precision"] else 0
    fp = predicted_pos - tp
    rows = [(classes[0], [neg - fp, fp]), (classes[1], [pos - tp, tp])]
    return {"classes": classes, "rows": rows, "source": "derived from n_test, positive_rate, precision, recall"}


IMPORTANCE_TOP, IMPORTANCE_BAR_PX = 20, 200


def _importance(store: Any, prefix: str) -> tuple[dict[str, Any] | None, str]:
    """The top IMPORTANCE_TOP features of the job's ``feature_importance.json`` (jobs.importance),
    or None and the reason there is no table."""
    key = prefix + "feature_importance.json"
    if not store.exists(key):
        return None, "The train job wrote no feature_importance.json (a version trained before it did)."
    data = store.get_json(key)
    features = data.get("features") or []
    if not features:
        return None, f"No feature importance: {data.get('error', 'the job listed no features')}."
    top = features[:IMPORTANCE_TOP]
    peak = max((f["importance"] for f in top), default=0.0)
    permutation = data.get("method") == "permutation"
    rows = [
        {
            "feature": f["feature"],
            "value": f"{f['importance']:.4g}",
            "std": f"{f['std']:.2g}" if "std" in f else "",
            # negative (shuffling helped: noise) and zero draw no bar
            "width": round(IMPORTANCE_BAR_PX * max(f["importance"], 0.0) / peak) if peak > 0 else 0,
        }
        for f in top
    ]
    if permutation:
        title = (
            f"Permutation importance: how much {data.get('metric')} on the test rows drops when a feature is shuffled"
        )
        source = f"{data.get('rows', '?')} rows, {data.get('repeats', '?')} shuffles each"
        label = f"{data.get('metric')} drop"
    else:
        title = "xgboost gain: the mean loss reduction of the splits on a feature"
        source = "from the trees"
        label = "gain"
    return {
        "title": title,
        "source": source,
        "label": label,
        "rows": rows,
        "spread": permutation,
        "shown": len(top),
        "total": len(features),
    }, ""


REALIZED_W, REALIZED_H, REALIZED_PAD = 480, 200, 20


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _realized(ctx: RunContext, version: str, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The version's realized metric per day (table and an SVG plot with intervals)."""

    rows = [r for r in history(ctx.env.appdb, ctx.model, version) if r["n_labelled"] > 0]
    if not rows:
        return None
    gate = ctx.spec.train.gate
    metric = rows[0]["metric"]
    offline = _offline(metrics, metric)
    lower = metric in LOWER_IS_BETTER

    def below(v: float | None) -> bool:
        return v is not None and metric == gate.metric and (v > gate.min if lower else v < gate.min)

    table = [
        {
            "ds": r["ds"].isoformat(),
            "value": _fmt(r["value"]),
            "ci": f"{_fmt(r['ci_low'])} .. {_fmt(r['ci_high'])}" if r["ci_low"] is not None else "n/a",
            "n": r["n_labelled"],
            "sync": r["label_sync_id"],
            "below": below(r["value"]),
        }
        for r in rows
    ]
    plotted = [r for r in rows if r["value"] is not None]
    plot = None
    if plotted:
        values: list[float] = [v for r in plotted for v in (r["value"], r["ci_low"], r["ci_high"]) if v is not None]
        values += [gate.min] + ([offline] if offline is not None else [])
        ymin, ymax = min(values), max(values)
        span = (ymax - ymin) or 1.0
        ymin, ymax = ymin - 0.05 * span, ymax + 0.05 * span
        inner_w, inner_h = REALIZED_W - 2 * REALIZED_PAD, REALIZED_H - 2 * REALIZED_PAD

        def y(v: float) -> float:
            return round(REALIZED_H - REALIZED_PAD - (v - ymin) / (ymax - ymin) * inner_h, 1)

        def x(i: int) -> float:
            return round(REALIZED_PAD + (inner_w * (i + 0.5) / len(plotted)), 1)

        plot = {
            "w": REALIZED_W,
            "h": REALIZED_H,
            "pad": REALIZED_PAD,
            "points": " ".join(f"{x(i)},{y(r['value'])}" for i, r in enumerate(plotted)),
            # a dot per day: one measured day draws no line
            "dots": [{"x": x(i), "y": y(r["value"]), "below": below(r["value"])} for i, r in enumerate(plotted)],
            "bars": [
                {"x": x(i), "lo": y(r["ci_low"]), "hi": y(r["ci_high"])}
                for i, r in enumerate(plotted)
                if r["ci_low"] is not None
            ],
            "offline": y(offline) if offline is not None else None,
            "bar": y(gate.min),
            "first": plotted[0]["ds"].isoformat(),
            "last": plotted[-1]["ds"].isoformat(),
            "ymin": f"{ymin:.3f}",
            "ymax": f"{ymax:.3f}",
        }
    return {"metric": metric, "rows": table, "plot": plot, "offline_text": _fmt(offline)}


def training_report(ctx: RunContext) -> str:
    """Write ``report.html`` next to the model this run trained; returns its URI."""

    st = ctx.load_state("train", "run the train stage first")
    store = ctx.env.store
    # The run's cost line beside the model: every later rewrite of its report still shows it.
    store.put_json(store.key(st["artifact_uri"]) + "cost.json", {"run_id": ctx.run_id, **costs.record(ctx, "train")})
    return version_report(ctx, st["version"], st["artifact_uri"])


def version_report(ctx: RunContext, version: str, artifact_uri: str) -> str:
    """(Re)write a version's ``report.html``: after its model gate, and after each measurement of
    its realized performance (:mod:`mlbatch.stages.realized`)."""

    st = {"version": version, "artifact_uri": artifact_uri}
    store, db = ctx.env.store, ctx.env.appdb
    prefix = store.key(st["artifact_uri"])
    with db.connect() as conn:
        mv = registry.get(conn, ctx.model, st["version"])
    metrics = store.get_json(prefix + "metrics.json")
    lineage = store.get_json(prefix + "lineage.json") if store.exists(prefix + "lineage.json") else {}
    gate = ctx.spec.train.gate
    importance, importance_note = _importance(store, prefix)
    html = _TRAINING.render(
        model=ctx.model,
        version=st["version"],
        status=mv.status if mv else "not registered",
        family=ctx.spec.train.family,
        metric=gate.metric,
        value=float(metrics.get(gate.metric, float("nan"))),
        lower=gate.metric in LOWER_IS_BETTER,
        gate=gate,
        verdicts=_verdicts(mv.reason if mv else None),
        scalars=_scalars(metrics),
        curves=_curves(ctx, prefix, metrics),
        task=metrics.get("task", "binary" if ctx.spec.is_binary else "multiclass"),
        confusion=_confusion(metrics, list(metrics.get("classes") or ctx.spec.labels.classes)),
        importance=importance,
        importance_note=importance_note,
        lineage={k: v if isinstance(v, str | int | float) else str(v) for k, v in lineage.items()},
        realized=_realized(ctx, version, metrics),
        artifact_uri=st["artifact_uri"],
        cost=_cost_line(store, prefix),
    )
    return store.put_bytes(prefix + "report.html", html.encode())


def _cost_line(store: Any, prefix: str) -> str:
    """The training run's cost line (mlbatch.reporting.costs), or why there is none."""

    if not store.exists(prefix + "cost.json"):
        return "not recorded (a version trained before runs recorded their cost)"
    cost = store.get_json(prefix + "cost.json")
    return f"{costs.line(cost)} (run {cost.get('run_id', '?')})"


def _offline(metrics: dict[str, Any], metric: str) -> float | None:
    v = metrics.get(metric)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def realized_reports(ctx: RunContext) -> str | None:
    """After a realized-performance measurement: each measured day's ``summary.json`` gains its
    realized metric, and each measured version's ``report.html`` is rewritten with its realized
    metric over time. Returns the newest measured version's report URI (None: nothing measured)."""
    measured = ctx.load_state("realized", "run realized_performance first").get("measured", [])
    store = ctx.env.store
    for r in measured:
        key = names.summary_key(ctx.model, r["ds"])
        if store.exists(key):
            summary = store.get_json(key)
            summary["realized"] = {k: r[k] for k in ("model_version", "metric", "value", "n_labelled", "ci")} | {
                "label_sync_id": r["label_sync_id"],
                "measured_at": r["measured_at"],
            }
            store.put_json(key, summary)
    uri = None
    for version in sorted({r["model_version"] for r in measured}):
        with ctx.env.appdb.connect() as conn:
            mv = registry.get(conn, ctx.model, version)
        if mv is not None:
            uri = version_report(ctx, version, mv.artifact_uri)
    return uri
