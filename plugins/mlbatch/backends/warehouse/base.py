"""What the stages need from a warehouse: the :class:`Warehouse` protocol, and the checks both
backends make before an unload.

Two backends implement it: :class:`~mlbatch.backends.warehouse.redshift.RedshiftWarehouse` (production,
statements through the Redshift Data API: a ``start_*`` submits and returns a statement id that
the task waits for, defers on or cancels) and
:class:`~mlbatch.backends.warehouse.duckdb_warehouse.DuckDBWarehouse` (the embedded stack: a ``start_*``
does the work in-process and returns ``None``, so there is nothing to wait for). The stages and
:class:`mlbatch.backends.env.Environment` name only this protocol; which class runs is
``MLBATCH_WAREHOUSE``'s business. Standard library and the object store only: importing it
imports no backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mlbatch.backends.warehouse.errors import UnloadError

if TYPE_CHECKING:
    from mlbatch.backends.store import ObjectStore


@runtime_checkable
class Warehouse(Protocol):
    """The calls the stages, the export gate and ``mlbatch status`` make on a warehouse."""

    # -- the features unload: the model's query, as parquet parts + manifest under a prefix ----
    def start_unload(self, query: str, store: ObjectStore, prefix: str) -> str | None:
        """Check the prefix (:func:`check_unload_prefix`) and start the unload; its statement id,
        or ``None`` when it already ran in this process."""
        ...

    def finish_unload(self, store: ObjectStore, prefix: str, statement_id: str | None) -> str:
        """After the unload: its manifest's URI (checked)."""
        ...

    def unload(self, query: str, store: ObjectStore, prefix: str) -> str:
        """Start, wait for and finish an unload; the manifest's URI."""
        ...

    # -- the export: one day of an export table replaced by parquet files, in one transaction --
    def start_replace_day(self, table: str, ds: str, uris: list[str], store: ObjectStore) -> str | None: ...

    def finish_replace_day(self, table: str, ds: str, statement_id: str | None) -> int:
        """After the replace: the day's row count in ``table``."""
        ...

    def replace_day(self, table: str, ds: str, uris: list[str], store: ObjectStore) -> int: ...

    def count_day(self, table: str, ds: str) -> int: ...

    def latest_day(self, table: str) -> str | None: ...

    # -- a started statement (by id): what an external-work step does while it runs -----------
    def is_running(self, statement_id: str) -> bool: ...

    def wait(self, statement_id: str, sql: str = "") -> Any:
        """Block until the statement ends; raise :class:`~mlbatch.backends.warehouse.errors.WarehouseError`
        naming it if it failed."""
        ...

    def trigger(self, statement_id: str) -> Any:
        """An Airflow trigger that fires when the statement ends (for a deferred task)."""
        ...

    def check_event(self, event: dict[str, Any] | None, what: str) -> None:
        """Raise if the trigger's event says the statement failed."""
        ...

    def cancel(self, statement_id: str) -> None: ...

    def statement_seconds(self, statement_id: str) -> float | None:
        """How long the warehouse spent on an ended statement (the run's cost line); None when
        it cannot say."""
        ...


def check_unload_prefix(store: ObjectStore, prefix: str) -> None:
    """An unload writes into a fresh folder of its own: ``prefix`` ends in ``/`` and holds nothing.

    A retry that found parts of an earlier attempt would mix two unloads in one manifest's
    folder (Redshift's UNLOAD would also fail on them), so this is an error, not a cleanup.
    """
    if not prefix.endswith("/"):
        raise UnloadError(f"unload prefix {store.uri(prefix)} must end with '/'")
    existing = store.list(prefix)
    if existing:
        raise UnloadError(
            f"unload prefix {store.uri(prefix)} already holds {len(existing)} files "
            f"(first: {existing[0]}); each run unloads to a fresh prefix"
        )
