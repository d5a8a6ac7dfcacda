"""Which backend stands behind each boundary, decided once per process from the environment.

With nothing set, everything is the embedded default stack under ``MLBATCH_HOME`` (``var/`` at
the repo root): ``app.db`` (SQLite, Aurora's stand-in), ``warehouse.duckdb`` (Redshift's),
``objects/`` (S3's). Production and tests point single boundaries elsewhere:

==============================  ===========================================  =========================
variable                        meaning                                      default
==============================  ===========================================  =========================
``MLBATCH_HOME``                the embedded stack's folder                  ``<repo>/var``
``MLBATCH_APPDB_CONN_ID``       Airflow connection of the app DB (type       unset: the URL below
                                ``mysql`` or ``postgres``)
``MLBATCH_APPDB_URL``           SQLAlchemy URL of the app DB (Aurora):       ``sqlite:///$HOME/app.db``
                                ``mysql+pymysql://``,
                                ``postgresql+psycopg2://``, ``sqlite:///``
``MLBATCH_OBJECT_STORE``        root URI of the object store                 ``file://$HOME/objects``
``MLBATCH_WAREHOUSE``           ``duckdb:///path`` or ``redshift://<conn>``  ``duckdb://$HOME/...``
``MLBATCH_AWS_CONN_ID``         Airflow AWS connection for S3                ``aws_default`` in tasks
``MLBATCH_LAUNCHER``            ``local`` (process), ``docker``, ``ecs``     ``local``
``MLBATCH_PROJECT_DIR``         where specs' relative paths (SQL) start      ``<repo>``
``MLBATCH_SPECS_DIR``           the model specs (for the CLI)                ``$PROJECT_DIR/dags/specs``
``MLBATCH_AURORA_LOAD_ROLE``    role ``SET`` per ``LOAD DATA FROM S3``       unset: no ``SET ROLE``
                                session; the app DB connection's extra
                                ``aurora_load_role`` wins
==============================  ===========================================  =========================

The app DB's backend also decides how a day is published (:attr:`Environment.publisher`): Aurora
MySQL / MariaDB, Aurora PostgreSQL / PostgreSQL (``COPY FROM STDIN``) or SQLite. With Aurora MySQL,
``MLBATCH_AURORA_LOAD_FROM_S3=1`` makes Aurora load the day with ``LOAD DATA FROM S3`` from the
object store instead of ``LOAD DATA LOCAL INFILE`` streamed from the worker. Aurora MySQL 3 grants
that load through a role a session does not have active by default: ``MLBATCH_AURORA_LOAD_ROLE``
(or the app DB connection's extra ``aurora_load_role``, which wins) names it, and each load session
runs ``SET ROLE`` with it first; the alternative is the cluster parameter
``activate_all_roles_on_login=1``. Only the publish's sessions may read client files
(``local_infile``); every other app DB session is opened without it.

Launcher settings (read by ``mlbatch.backends.launchers`` when ``MLBATCH_LAUNCHER`` picks that backend):

=====================================  ================================================  =========================
variable                               meaning                                           default
=====================================  ================================================  =========================
``MLBATCH_TRAIN_IMAGE``                image for ``jobs.train`` (docker)                 ``mlbatch/train:latest``
``MLBATCH_SCORE_IMAGE``                image for ``jobs.score`` (docker); torch models   ``mlbatch/score:latest``
                                       need the train image or a torch score build
``MLBATCH_DOCKER_NETWORK``             ``docker run --network`` (``host`` in tests)      docker's default
``MLBATCH_DOCKER_PASS_ENV``            extra variable names copied into containers;      none
                                       the only way credentials get in (test servers)
``DOCKER_HOST``                        the Docker daemon                                 the local socket
``MLBATCH_ECS_CLUSTER``                ECS cluster (required for ``ecs``)
``MLBATCH_ECS_TRAIN_TASK_DEFINITION``  task definition running the train image           (required)
``MLBATCH_ECS_SCORE_TASK_DEFINITION``  task definition running the score image           (required)
``MLBATCH_ECS_CONTAINER``              container name in both task definitions           ``job``
``MLBATCH_ECS_GPU_CAPACITY_PROVIDER``  capacity provider for jobs with ``gpu > 0``       the cluster's default
``MLBATCH_ECS_CPU_CAPACITY_PROVIDER``  capacity provider for CPU-only jobs               the cluster's default
``MLBATCH_ECS_SUBNETS``                comma-separated subnets (awsvpc)                  the task definition's
``MLBATCH_ECS_SECURITY_GROUPS``        comma-separated security groups (awsvpc)          none
``MLBATCH_ECS_ASSIGN_PUBLIC_IP``       ``true`` to assign a public IP                    ``false``
``MLBATCH_ECS_LOG_GROUP``              CloudWatch group (and ``_LOG_STREAM_PREFIX``)     the task definition's
``MLBATCH_ECS_POLL_S``                 seconds between the worker's DescribeTasks        ``5``
                                       polls (its backoff grows to 60)
``MLBATCH_ECS_TRIGGER_POLL_S``         seconds between the triggerer's waiter polls      ``30``
                                       (deferred waits)
``MLBATCH_ECS_INSTANCE_TYPES``         comma-separated EC2 types of the capacity         unset: not checked
                                       providers (``g5.xlarge,c7i.2xlarge``): only
                                       ``mlbatch doctor``'s placement check reads it
``MLBATCH_ECS_TASK_ROLE_ARN``          task role of both task definitions (only read     (required there)
                                       by ``mlbatch ecs task-definitions``; so is
                                       ``MLBATCH_ECS_EXECUTION_ROLE_ARN``)
``MLBATCH_AWS_CONN_ID``                Airflow connection for ECS and CloudWatch         ``aws_default``
``MLBATCH_AWS_REGION``                 region for those clients                          the connection's
=====================================  ================================================  =========================

``redshift://<conn>`` names an Airflow AWS connection; the cluster (or serverless workgroup),
database and the IAM role UNLOAD/COPY use come from its extras or ``MLBATCH_REDSHIFT_*``
(see :mod:`mlbatch.backends.warehouse.redshift`). S3 credentials come from the AWS connection inside
Airflow tasks, else from the standard AWS chain (see :func:`mlbatch.backends.store.aws_conn_id`).

Credentials never live here: URLs name hosts, and passwords come from Airflow connections or
``MLBATCH_APPDB_PASSWORD`` (kept out of every log line by :func:`redact`). The app DB's
connection (``MLBATCH_APPDB_CONN_ID``, TLS and IAM auth in its extras: see
:mod:`mlbatch.backends.appdb.connection`) wins over ``MLBATCH_APPDB_URL``, which stays the CLI's fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.backends.launchers import get_launcher
from mlbatch.backends.store import ObjectStore
from mlbatch.backends.warehouse import get_warehouse
from mlbatch.redaction import redact
from mlbatch.spec import REPO_ROOT, project_dir

if TYPE_CHECKING:
    from mlbatch.backends.appdb.hook import AppDbHook
    from mlbatch.backends.appdb.publisher import Publisher
    from mlbatch.backends.launchers.base import Launcher
    from mlbatch.backends.warehouse.base import Warehouse

LOAD_FROM_S3_ENV = "MLBATCH_AURORA_LOAD_FROM_S3"


@dataclass
class Environment:
    home: Path
    appdb_url: str
    object_store: str
    warehouse_url: str
    launcher_kind: str
    specs_dir: Path
    appdb_conn_id: str | None = None
    appdb_load_from_s3: bool = False  # Aurora: LOAD DATA FROM S3 instead of LOCAL INFILE

    @classmethod
    def from_env(cls) -> Environment:
        home = Path(os.environ.get("MLBATCH_HOME") or REPO_ROOT / "var").resolve()
        return cls(
            home=home,
            appdb_url=os.environ.get("MLBATCH_APPDB_URL") or f"sqlite:///{home / 'app.db'}",
            object_store=os.environ.get("MLBATCH_OBJECT_STORE") or (home / "objects").as_uri(),
            warehouse_url=os.environ.get("MLBATCH_WAREHOUSE") or f"duckdb://{home / 'warehouse.duckdb'}",
            launcher_kind=os.environ.get("MLBATCH_LAUNCHER", "local"),
            specs_dir=Path(os.environ.get("MLBATCH_SPECS_DIR") or project_dir() / "dags" / "specs").resolve(),
            appdb_conn_id=os.environ.get("MLBATCH_APPDB_CONN_ID") or None,
            appdb_load_from_s3=os.environ.get(LOAD_FROM_S3_ENV) == "1",
        )

    # Each boundary's backend comes from that boundary's registry, keyed by the setting's scheme
    # (or name): mlbatch.backends.store.FILESYSTEMS, mlbatch.backends.appdb.backends.BACKENDS,
    # mlbatch.backends.warehouse.WAREHOUSES, mlbatch.backends.launchers.LAUNCHERS. An unknown one is an error
    # naming the setting and the known values; nothing here branches on a backend.

    @cached_property
    def store(self) -> ObjectStore:
        store = ObjectStore(self.object_store)
        store.prepare()  # the scheme is known; a local root's folder exists
        return store

    @cached_property
    def appdb(self) -> AppDbHook:
        if self.appdb_conn_id:
            return AppDbHook.from_connection(self.appdb_conn_id)
        return AppDbHook(self.appdb_url)

    @cached_property
    def publisher(self) -> Publisher:
        """How a day is published into the app DB: the app DB backend's publisher."""
        load_from = self.store if self.appdb_load_from_s3 else None
        return self.appdb.backend.publisher(self.appdb, load_from)

    @cached_property
    def warehouse(self) -> Warehouse:
        """The backend ``MLBATCH_WAREHOUSE`` names; callers see only the protocol."""

        return get_warehouse(self.warehouse_url)

    @cached_property
    def launcher(self) -> Launcher:

        return get_launcher(self.launcher_kind, self.store, self.home)

    def describe(self) -> dict[str, str]:
        return {
            "home": str(self.home),
            "appdb": f"connection {self.appdb_conn_id}" if self.appdb_conn_id else redact(self.appdb_url),
            "object_store": self.object_store,
            "warehouse": self.warehouse_url,
            "launcher": self.launcher_kind,
        }
