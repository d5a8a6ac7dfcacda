"""Stage functions: the work of every task, callable from Airflow and from the CLI alike.

``PIPELINE`` lists, per CLI stage name, the steps in the order the DAGs run them. Each step is
(task name, "module:function", extra args); ``score`` expands to one step per shard.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from mlbatch.stages.context import RunContext

STAGES = ("labels", "unload", "train", "score", "publish", "export")

PIPELINE: dict[str, list[tuple[str, str, tuple[Any, ...]]]] = {
    "labels": [
        ("check_sheet", "labels:check_sheet", ()),
        ("labels_gate", "labels:labels_gate", ()),
        ("apply_labels", "labels:apply_labels", ()),
        ("realized_performance", "realized:realized_performance", ()),
    ],
    "unload": [
        ("unload_training", "features:unload", ("train",)),
        ("features_gate[train]", "features:features_gate", ("train",)),
        ("unload_scoring", "features:unload", ("score",)),
    ],
    "train": [
        ("train", "train:train", ()),
        ("register", "train:register", ()),
        ("model_gate", "train:model_gate", ()),
    ],
    "score": [
        ("resolve_model", "score:resolve_model", ()),
        ("features_gate[score]", "features:features_gate", ("score",)),
        ("score", "score:score_shard", ("*shards",)),
        ("predictions_gate", "score:predictions_gate", ()),
    ],
    "publish": [("publish", "publish:publish", ())],
    "export": [("export", "publish:export", ()), ("export_gate", "publish:export_gate", ())],
}


def resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"mlbatch.stages.{module}"), name)


def steps(ctx: RunContext, stages: list[str]) -> Iterator[tuple[str, Any]]:
    """(step name, thunk) for the chosen stages, in pipeline order."""
    for stage in STAGES:
        if stage not in stages:
            continue
        for name, target, args in PIPELINE[stage]:
            fn = resolve(target)
            if args == ("*shards",):
                for shard in range(ctx.spec.score.shards):
                    yield f"{name}[{shard}]", lambda fn=fn, shard=shard: fn(ctx, shard)
            else:
                yield name, lambda fn=fn, args=args: fn(ctx, *args)
