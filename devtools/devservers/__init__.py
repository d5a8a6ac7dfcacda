"""Real servers on 127.0.0.1 for tests and benchmarks: MariaDB (Aurora's stand-in), moto S3, dockerd,
a Docker registry, and Airflow's own production back ends: PostgreSQL (the metadata DB) and Redis
(the Celery broker).

Each server gets its own data directory and a free port, is installed on first use when
missing (``apt-get install mariadb-server``; CI machines start bare), and stops with the
process that started it. Nothing here is used in production. One module per server; every
name is importable from here.
"""

from devtools.devservers._base import apt_install, free_port
from devtools.devservers.airflow_backends import Postgres, Redis, start_postgres, start_redis
from devtools.devservers.docker import Dockerd, Registry, start_dockerd, start_registry
from devtools.devservers.mariadb import MariaDB, start_mariadb
from devtools.devservers.s3 import MotoS3, s3_environment, start_moto_s3

__all__ = [
    "Dockerd",
    "MariaDB",
    "MotoS3",
    "Postgres",
    "Redis",
    "Registry",
    "apt_install",
    "free_port",
    "s3_environment",
    "start_dockerd",
    "start_moto_s3",
    "start_mariadb",
    "start_postgres",
    "start_redis",
    "start_registry",
]
