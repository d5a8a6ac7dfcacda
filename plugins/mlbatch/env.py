"""Which backend stands behind each boundary, decided once per process from the environment.

With nothing set, everything is the embedded default stack under ``MLBATCH_HOME`` (``var/`` at
the repo root): ``app.db`` (SQLite, Aurora's stand-in), ``warehouse.duckdb`` (Redshift's),
``objects/`` (S3's). Production and tests point single boundaries elsewhere:

=========================  ===========================================  =========================
variable                   meaning                                      default
=========================  ===========================================  =========================
``MLBATCH_HOME``           the embedded stack's folder                  ``<repo>/var``
``MLBATCH_APPDB_URL``      SQLAlchemy URL of the app DB (Aurora)        ``sqlite:///$HOME/app.db``
``MLBATCH_OBJECT_STORE``   root URI of the object store                 ``file://$HOME/objects``
``MLBATCH_WAREHOUSE``      ``duckdb:///path``                           ``duckdb://$HOME/...``
``MLBATCH_LAUNCHER``       ``local`` (process), ``docker``, ``ecs``     ``local``
``MLBATCH_SPECS_DIR``      the model specs                              ``<repo>/dags/specs``
=========================  ===========================================  =========================

Credentials never live here: URLs name hosts, and passwords come from Airflow connections or
``MLBATCH_APPDB_PASSWORD`` (kept out of every log line by :func:`redact`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from mlbatch.store import ObjectStore

if TYPE_CHECKING:
    from mlbatch.appdb.hook import AppDbHook
    from mlbatch.launchers.base import Launcher
    from mlbatch.warehouse.duckdb_warehouse import DuckDBWarehouse

REPO_ROOT = Path(__file__).resolve().parents[2]


def redact(url: str) -> str:
    """A URL fit for a log line: the password, if any, replaced by ***."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


@dataclass
class Environment:
    home: Path
    appdb_url: str
    object_store: str
    warehouse_url: str
    launcher_kind: str
    specs_dir: Path

    @classmethod
    def from_env(cls) -> Environment:
        home = Path(os.environ.get("MLBATCH_HOME") or REPO_ROOT / "var").resolve()
        return cls(
            home=home,
            appdb_url=os.environ.get("MLBATCH_APPDB_URL") or f"sqlite:///{home / 'app.db'}",
            object_store=os.environ.get("MLBATCH_OBJECT_STORE") or (home / "objects").as_uri(),
            warehouse_url=os.environ.get("MLBATCH_WAREHOUSE") or f"duckdb://{home / 'warehouse.duckdb'}",
            launcher_kind=os.environ.get("MLBATCH_LAUNCHER", "local"),
            specs_dir=Path(os.environ.get("MLBATCH_SPECS_DIR") or REPO_ROOT / "dags" / "specs").resolve(),
        )

    @cached_property
    def store(self) -> ObjectStore:
        if self.object_store.startswith("file://"):
            Path(self.object_store.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return ObjectStore(self.object_store)

    @cached_property
    def appdb(self) -> AppDbHook:
        from mlbatch.appdb.hook import AppDbHook

        if self.appdb_url.startswith("sqlite:///"):
            Path(self.appdb_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return AppDbHook(self.appdb_url)

    @cached_property
    def warehouse(self) -> DuckDBWarehouse:
        from mlbatch.warehouse.duckdb_warehouse import DuckDBWarehouse

        if not self.warehouse_url.startswith("duckdb://"):
            raise ValueError(
                f"MLBATCH_WAREHOUSE={self.warehouse_url!r}: only duckdb:///path runs here; "
                "Redshift is reached through the Airflow connection named in the spec"
            )
        return DuckDBWarehouse(Path(self.warehouse_url.removeprefix("duckdb://")))

    @cached_property
    def launcher(self) -> Launcher:
        from mlbatch.launchers import get_launcher

        return get_launcher(self.launcher_kind, self)

    def describe(self) -> dict[str, str]:
        return {
            "home": str(self.home),
            "appdb": redact(self.appdb_url),
            "object_store": self.object_store,
            "warehouse": self.warehouse_url,
            "launcher": self.launcher_kind,
        }
