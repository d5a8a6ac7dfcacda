"""The Warehouse protocol: both backends implement it, and the production one stays free of DuckDB."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from mlbatch.backends.store import ObjectStore
from mlbatch.backends.warehouse.base import Warehouse, check_unload_prefix
from mlbatch.backends.warehouse.duckdb_warehouse import DuckDBWarehouse
from mlbatch.backends.warehouse.errors import UnloadError, WarehouseError
from mlbatch.backends.warehouse.redshift import RedshiftStatementError, RedshiftWarehouse

from tests.support.paths import REPO

MEMBERS = [name for name, member in vars(Warehouse).items() if inspect.isfunction(member) and not name.startswith("_")]


def test_importing_redshift_imports_no_duckdb() -> None:
    code = (
        "import sys; import mlbatch.backends.warehouse.redshift; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'duckdb' or m.endswith('duckdb_warehouse')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_protocol_lists_what_the_stages_call() -> None:
    assert {"start_unload", "finish_unload", "start_replace_day", "finish_replace_day", "count_day"} <= set(MEMBERS)
    assert {"is_running", "wait", "trigger", "check_event", "cancel", "latest_day"} <= set(MEMBERS)


@pytest.mark.parametrize("backend", [DuckDBWarehouse, RedshiftWarehouse], ids=lambda c: c.__name__)
def test_each_backend_takes_every_protocol_call(backend: type) -> None:
    for name in MEMBERS:
        wanted = [p for p in inspect.signature(getattr(Warehouse, name)).parameters.values() if p.name != "self"]
        got = inspect.signature(getattr(backend, name)).parameters
        got_positional = [p for p in got.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in got_positional[: len(wanted)]] == [p.name for p in wanted], f"{backend.__name__}.{name}"
        extra = [p for p in got.values() if p.name != "self" and p.name not in {w.name for w in wanted}]
        assert all(p.default is not p.empty for p in extra), f"{backend.__name__}.{name} needs more arguments"
    assert isinstance(DuckDBWarehouse(REPO / "no.duckdb"), Warehouse)


def test_errors_share_one_base_outside_any_backend() -> None:
    assert issubclass(UnloadError, WarehouseError) and issubclass(RedshiftStatementError, WarehouseError)
    assert RedshiftStatementError.__module__ == UnloadError.__module__ == "mlbatch.backends.warehouse.errors"


def test_an_unload_prefix_must_be_a_fresh_folder(tmp_path: Path) -> None:
    store = ObjectStore((tmp_path / "objects").as_uri())
    with pytest.raises(UnloadError, match="must end with '/'"):
        check_unload_prefix(store, "unloads/x")
    check_unload_prefix(store, "unloads/x/")  # empty: fine
    store.put_bytes("unloads/x/0000_part_00.parquet", b"old")
    with pytest.raises(UnloadError, match=r"already holds 1 files \(first: .*0000_part_00.parquet\)"):
        check_unload_prefix(store, "unloads/x/")
    # the embedded warehouse makes the same check (before it opens its file)
    with pytest.raises(UnloadError, match="already holds 1 files"):
        DuckDBWarehouse(tmp_path / "w.duckdb").unload("select 1", store, "unloads/x/")
