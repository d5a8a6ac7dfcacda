"""Airflow's production back ends for the distributed-stack tests: PostgreSQL (the metadata DB)
and Redis (the Celery broker). The same PostgreSQL stands in for Aurora PostgreSQL as the app DB."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.devservers._base import _terminate, _wait_for_port, apt_install, free_port

POSTGRES_PACKAGES = ["postgresql"]
REDIS_PACKAGES = ["redis-server"]
POSTGRES_USER = "postgres"  # the Debian package's system user: PostgreSQL refuses to run as root


def _postgres_bin(name: str) -> str:
    """A PostgreSQL server binary: Debian keeps them in /usr/lib/postgresql/<major>/bin, off PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        apt_install(POSTGRES_PACKAGES)
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not under /usr/lib/postgresql/*/bin after installing postgresql")
    return found[-1]  # the newest major version


@dataclass
class Postgres:
    """A throw-away PostgreSQL server with one database and one password-authenticated user."""

    port: int
    root: Path
    proc: subprocess.Popen
    database: str
    user: str
    password: str

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL: ``postgresql+psycopg2`` (Airflow's sync driver) or ``postgresql+asyncpg``."""
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def admin_url(self, database: str | None = None) -> str:
        """The superuser over the server's Unix socket (trusted, as the set-up connects): for tests
        that create roles, which the application's user may not."""
        socket = self.root / "run"
        return f"postgresql+psycopg2://{POSTGRES_USER}@/{database or self.database}?host={socket}&port={self.port}"

    def stop(self) -> None:
        _terminate(self.proc, signal.SIGINT)  # "fast" shutdown: roll back sessions, then exit
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres_user() -> dict:
    """Popen arguments that run a server binary as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(POSTGRES_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start_postgres(
    base: Path | None = None,
    *,
    database: str = "airflow",
    user: str = "airflow",
    password: str = "airflow",  # noqa: S107 - a throw-away test server
    createdb: bool = False,
) -> Postgres:
    """Start PostgreSQL (Debian 12: 15) on a free port with its own data directory.

    Host connections need the password (scram-sha-256), as on a real server; the set-up itself
    goes through the server's Unix socket, which trusts the ``postgres`` user. ``user`` owns
    ``database`` and is no superuser, as an application's user on Aurora; ``createdb`` lets it
    create databases too (the app DB tests make a fresh one per test).
    """
    initdb, server = _postgres_bin("initdb"), _postgres_bin("postgres")
    as_user = _as_postgres_user()
    # Run as the postgres user, the server must reach its folder: pytest's temporary folders are
    # private to root, so then it lives in the system's temporary folder instead of ``base``.
    root = Path(tempfile.mkdtemp(prefix="mlbatch-postgres-", dir=None if as_user else base))
    datadir, sockdir, log = root / "data", root / "run", root / "postgres.log"
    sockdir.mkdir()
    if as_user:
        for path in (root, sockdir):
            os.chown(path, as_user["user"], as_user["group"])
    init = subprocess.run(
        [initdb, "-D", str(datadir), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"],
        capture_output=True,
        text=True,
        cwd=root,
        **as_user,
    )
    if init.returncode != 0:
        raise RuntimeError(
            f"initdb failed ({init.returncode}) in {datadir}:\n{init.stdout[-2000:]}{init.stderr[-2000:]}"
        )
    port = free_port()
    with log.open("wb") as out:
        if as_user:
            os.chown(log, as_user["user"], as_user["group"])
        proc = subprocess.Popen(
            [
                server,
                "-D",
                str(datadir),
                "-p",
                str(port),
                "-k",
                str(sockdir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",  # scheduler, API server, workers, triggerer each keep a pool
                "-c",
                "fsync=off",  # a test server: durability is not under test
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            **as_user,
        )
    pg = Postgres(port, root, proc, database, user, password)
    atexit.register(pg.stop)
    _wait_for_port(port, proc, "postgres", log)
    psql = shutil.which("psql") or _postgres_bin("psql")
    setup = (
        f"CREATE USER \"{user}\" PASSWORD '{password}'{' CREATEDB' if createdb else ''};"  # noqa: S608 - test names
        f'CREATE DATABASE "{database}" OWNER "{user}" ENCODING \'UTF8\';'
    )
    for statement in setup.split(";")[:-1]:
        _run_until_ready(
            [psql, "-h", str(sockdir), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", statement],
            as_user,
        )
    return pg


def _run_until_ready(cmd: list[str], as_user: dict, timeout: float = 30) -> None:
    """Run a client command, retrying while the server still answers "starting up"."""
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(cmd, capture_output=True, text=True, **as_user)
        if proc.returncode == 0:
            return
        if "starting up" not in proc.stderr or time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(cmd[:1])} failed: {proc.stderr.strip()}")
        time.sleep(0.3)


@dataclass
class Redis:
    """A throw-away Redis server (no persistence); ``url`` is the Celery broker URL."""

    port: int
    root: Path
    proc: subprocess.Popen
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _terminate(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis(base: Path | None = None, *, password: str | None = None) -> Redis:
    """Start redis-server (Debian 12: 7.0) on a free loopback port, nothing written to disk;
    with ``password``, clients must AUTH (``requirepass``), as on a shared broker."""
    if not shutil.which("redis-server"):
        apt_install(REDIS_PACKAGES)
    root = Path(tempfile.mkdtemp(prefix="mlbatch-redis-", dir=base))
    port, log = free_port(), root / "redis.log"
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
            "--logfile",
            str(log),
            *(["--requirepass", password] if password else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    redis = Redis(port, root, proc, password)
    atexit.register(redis.stop)
    _wait_for_port(port, proc, "redis-server", log)
    return redis
