"""What every stage function receives: the model, the day, the run, and the environment.

Stage functions are plain Python called by the Airflow tasks and by ``mlbatch run`` alike.
Everything a run writes lives under keys derived from (model, ds, run), so a later task of the
same run, a retry, or a later CLI invocation finds it without passing data through XCom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from mlbatch import names
from mlbatch.backends.env import Environment
from mlbatch.spec import ModelSpec

Purpose = str  # "train" or "score"
RUN_STATE = "run"  # runs/<model>/<ds>/<run_key>/run.json: the run's id


def check_ds(ds: str) -> str:
    try:
        return date.fromisoformat(ds).isoformat()
    except ValueError:
        raise ValueError(f"ds {ds!r} is not a date in YYYY-MM-DD form") from None


@dataclass(frozen=True)
class RunContext:
    env: Environment
    spec: ModelSpec
    ds: str
    run_id: str
    dag_id: str = ""
    # The run's params (Airflow trigger form or CLI options), e.g. model_version, dry_run.
    params: Mapping[str, Any] = field(default_factory=dict)
    # What started the run, by asset kind ("labels", "model"): the newest triggering asset
    # event's extra, e.g. {"labels": {"sync_id": ...}}; empty for scheduled and manual runs.
    triggered_by: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ds", check_ds(self.ds))

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def run_key(self) -> str:
        """The run as a path segment: readable, and unique even after unsafe characters go."""
        return names.run_key(self.run_id)

    # Object keys of everything a run writes, in the bucket's layout (mlbatch.names).
    def unload_prefix(self, purpose: Purpose) -> str:
        return names.unload_prefix(self.model, purpose, self.ds, self.run_key)

    def manifest_key(self, purpose: Purpose) -> str:
        return names.manifest_key(self.model, purpose, self.ds, self.run_key)

    def predictions_prefix(self) -> str:
        return names.predictions_prefix(self.model, self.ds, self.run_key)

    def shard_key(self, shard: int) -> str:
        return names.shard_key(self.model, self.ds, self.run_key, shard)

    def run_prefix(self) -> str:
        """The folder of the run's state (every :meth:`state_key`)."""
        return names.run_prefix(self.model, self.ds, self.run_key)

    def state_key(self, name: str) -> str:
        return names.state_key(self.model, self.ds, self.run_key, name)

    def save_state(self, name: str, value: dict[str, Any]) -> None:
        self._note_run()
        self.env.store.put_json(self.state_key(name), value)

    def _note_run(self) -> None:
        """``run.json`` beside the run's state names the run (its key cannot be turned back into its
        id): ``mlbatch run --stage publish`` finds the run that scored a day by it."""
        key = self.state_key(RUN_STATE)
        if not self.env.store.exists(key):
            self.env.store.put_json(key, {"run_id": self.run_id, "dag_id": self.dag_id})

    def load_state(self, name: str, hint: str) -> dict[str, Any]:
        """A step's result, which this run must have kept (``hint`` says what makes it)."""
        state = self.kept_state(name)
        if state is None:
            uri = self.env.store.uri(self.state_key(name))
            raise RuntimeError(f"{self.model} {self.ds}: no {name} result for run {self.run_id!r} ({uri}); {hint}")
        return state

    def kept_state(self, name: str) -> dict[str, Any] | None:
        """A step's result if this run kept one (None: the step did not run, or kept none)."""
        key = self.state_key(name)
        if not self.env.store.exists(key):
            return None
        state: dict[str, Any] = self.env.store.get_json(key)  # what save_state wrote
        return state
