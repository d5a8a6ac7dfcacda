"""Real servers on 127.0.0.1 for tests and benchmarks: MariaDB (Aurora's stand-in), moto S3, dockerd,
and Airflow's own production back ends: PostgreSQL (the metadata DB) and Redis (the Celery broker).

Each server gets its own data directory and a free port, is installed on first use when
missing (``apt-get install mariadb-server``; CI machines start bare), and stops with the
process that started it. Nothing here is used in production.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MARIADB_PACKAGES = ["mariadb-server", "mariadb-client"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Ask a server to shut down (``sig``), wait ``timeout`` seconds, then kill it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, log: Path | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def apt_install(packages: list[str]) -> None:
    """Install Debian packages (the machine runs as root; CI starts without them)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class MariaDB:
    """A throw-away MariaDB server: ``url`` is a SQLAlchemy URL for its ``mlbatch`` database."""

    port: int
    datadir: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"mysql+pymysql://mlbatch:mlbatch@127.0.0.1:{self.port}/mlbatch"

    def stop(self) -> None:
        _terminate(self.proc)
        shutil.rmtree(self.datadir, ignore_errors=True)


def start_mariadb(base: Path | None = None) -> MariaDB:
    """Start MariaDB 10.11 (Debian 12) on a free port with its own data directory."""
    if not shutil.which("mariadbd"):
        apt_install(MARIADB_PACKAGES)
    root = Path(tempfile.mkdtemp(prefix="mlbatch-mariadb-", dir=base))
    datadir, sock, log = root / "data", root / "mysqld.sock", root / "error.log"
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            "mariadb-install-db",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *user,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--log-error={log}",
            f"--pid-file={root / 'mysqld.pid'}",
            "--local-infile=1",  # LOAD DATA LOCAL INFILE: the bulk publish path
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=512M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-allowed-packet=256M",
            "--skip-name-resolve",
            *user,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = MariaDB(port, root, proc)
    atexit.register(server.stop)
    _wait_for_port(port, proc, "mariadbd", log)
    setup = (
        "CREATE DATABASE IF NOT EXISTS mlbatch CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
        "CREATE USER IF NOT EXISTS 'mlbatch'@'127.0.0.1' IDENTIFIED BY 'mlbatch';"
        "CREATE USER IF NOT EXISTS 'mlbatch'@'localhost' IDENTIFIED BY 'mlbatch';"
        "GRANT ALL ON *.* TO 'mlbatch'@'127.0.0.1' WITH GRANT OPTION;"
        "GRANT ALL ON *.* TO 'mlbatch'@'localhost' WITH GRANT OPTION;"
    )
    subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", setup], check=True)
    return server


@dataclass
class MotoS3:
    """moto's S3 server on a free loopback port; ``endpoint`` goes in ``AWS_ENDPOINT_URL``."""

    port: int
    server: object

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


def start_moto_s3() -> MotoS3:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    moto = MotoS3(port, server)
    atexit.register(moto.stop)
    return moto


def s3_environment(endpoint: str) -> dict[str, str]:
    """Environment for code (ours, pyarrow, boto3, jobs) that talks to a test S3 server."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto accepts any credentials
        "AWS_DEFAULT_REGION": "us-east-1",
    }


DOCKER_PACKAGES = ["docker.io"]  # dockerd 20.10 + containerd + runc (Debian 12); the CLI is optional
DOCKER_ROOT = Path(os.environ.get("MLBATCH_DOCKER_ROOT", "/var/lib/mlbatch-docker"))


@dataclass
class Dockerd:
    """A Docker daemon of our own; ``host`` goes in ``DOCKER_HOST``."""

    root: Path
    proc: subprocess.Popen | None  # None: an earlier process's daemon was still up and is reused

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def stop(self) -> None:
        _terminate(self.proc, timeout=60)


def _docker_ping(host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means: not up (yet)
        return False


def start_dockerd(root: Path = DOCKER_ROOT, timeout: float = 90) -> Dockerd:
    """Start dockerd with its own socket and data root under ``root`` (installed when missing).

    The data root outlives the daemon on purpose: images built by one test run (the debootstrap
    base, the train and score images) are reused by the next on the same machine. The storage
    driver is dockerd's own choice (overlay2 where the kernel allows it, else fuse-overlayfs, else
    vfs); ``MLBATCH_DOCKER_STORAGE_DRIVER`` forces one. A daemon already answering on the socket
    (started by an earlier process) is reused and left running.
    """
    sock = root / "docker.sock"
    if sock.exists() and _docker_ping(f"unix://{sock}"):
        return Dockerd(root, None)
    if not shutil.which("dockerd"):
        apt_install(DOCKER_PACKAGES)
    root.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    driver = os.environ.get("MLBATCH_DOCKER_STORAGE_DRIVER")
    log = root / "dockerd.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--host=unix://{sock}",
                f"--pidfile={root / 'docker.pid'}",
                *([f"--storage-driver={driver}"] if driver else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Dockerd(root, proc)
    atexit.register(daemon.stop)
    deadline = time.monotonic() + timeout
    while not _docker_ping(daemon.host):
        if proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dockerd did not answer on {sock} within {timeout:.0f} s (log {log}):\n{tail}")
        time.sleep(0.3)
    return daemon


REGISTRY_PACKAGES = ["docker-registry"]  # Distribution 2.8 (Debian 12): ECR speaks the same API


@dataclass
class Registry:
    """An image registry on 127.0.0.1; ``address`` (host:port) is what ``mlbatch images push --registry`` takes.

    Docker treats 127.0.0.0/8 registries as insecure by default: plain HTTP, no TLS set-up needed.
    """

    port: int
    root: Path
    proc: subprocess.Popen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for ``repository`` (its HTTP API, not Docker's view)."""
        import json
        import urllib.request

        url = f"http://{self.address}/v2/{repository}/tags/list"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a loopback test server
            return sorted(json.load(resp).get("tags") or [])

    def stop(self) -> None:
        _terminate(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


def start_registry(base: Path | None = None) -> Registry:
    """Start Debian's ``docker-registry`` on a free loopback port with its own storage (installed when missing)."""
    binary = shutil.which("docker-registry")
    if not binary:
        apt_install(REGISTRY_PACKAGES)
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    root = Path(tempfile.mkdtemp(prefix="mlbatch-registry-", dir=base))
    port = free_port()
    config, log = root / "config.yml", root / "registry.log"
    # No auth, no TLS: a loopback test server (Docker pushes to 127.0.0.1 over plain HTTP).
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    registry = Registry(port, root, proc)
    atexit.register(registry.stop)
    _wait_for_port(port, proc, "docker-registry", log)
    return registry


# --- Airflow's production back ends ------------------------------------------------------------
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
) -> Postgres:
    """Start PostgreSQL (Debian 12: 15) on a free port with its own data directory.

    Host connections need the password (scram-sha-256), as on a real server; the set-up itself
    goes through the server's Unix socket, which trusts the ``postgres`` user.
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
        f"CREATE USER \"{user}\" PASSWORD '{password}';"  # noqa: S608 - fixed test names, not input
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
