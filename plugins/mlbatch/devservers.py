"""Real servers on 127.0.0.1 for tests and benchmarks: MariaDB (Aurora's stand-in), moto S3, dockerd.

Each server gets its own data directory and a free port, is installed on first use when
missing (``apt-get install mariadb-server``; CI machines start bare), and stops with the
process that started it. Nothing here is used in production.
"""

from __future__ import annotations

import atexit
import contextlib
import os
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
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
        "GRANT ALL ON *.* TO 'mlbatch'@'127.0.0.1'; GRANT ALL ON *.* TO 'mlbatch'@'localhost';"
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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
