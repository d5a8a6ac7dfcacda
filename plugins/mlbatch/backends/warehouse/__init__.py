"""The warehouse side: Redshift in production, a DuckDB file in the embedded stack.

:data:`WAREHOUSES` maps the scheme of ``MLBATCH_WAREHOUSE`` to the factory of its backend;
:func:`get_warehouse` looks it up. Callers see only the :class:`~mlbatch.backends.warehouse.base.Warehouse`
protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlbatch.backends.warehouse.base import Warehouse


# Each factory imports its backend when it is chosen: DuckDB and sqlglot (the embedded side) and
# the amazon provider's Redshift Data API hook are heavy, and a process needs only one of them.
def _duckdb(url: str) -> Warehouse:
    # Chosen at run time: only the warehouse MLBATCH_WAREHOUSE names loads (with its SDK).
    from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse

    return DuckDBWarehouse.from_url(url)


def _redshift(url: str) -> Warehouse:
    # Chosen at run time: only the warehouse MLBATCH_WAREHOUSE names loads (with its SDK).
    from mlbatch.backends.warehouse.redshift import RedshiftWarehouse

    return RedshiftWarehouse.from_url(url)


# The scheme of MLBATCH_WAREHOUSE -> the backend's factory (given the whole URL).
WAREHOUSES: dict[str, Callable[[str], Warehouse]] = {"duckdb": _duckdb, "redshift": _redshift}


def get_warehouse(url: str) -> Warehouse:
    """The warehouse ``url`` (``MLBATCH_WAREHOUSE``) names: ``duckdb:///path`` or ``redshift://<conn>``."""
    scheme, sep, _ = url.partition("://")
    factory = WAREHOUSES.get(scheme) if sep else None
    if factory is None:
        raise ValueError(
            f"MLBATCH_WAREHOUSE={url!r}: expected duckdb:///path (embedded) or redshift://<airflow_conn_id> "
            f"(production); known schemes: {', '.join(WAREHOUSES)}"
        )
    return factory(url)
