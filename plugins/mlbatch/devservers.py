"""Real servers on 127.0.0.1 for tests and benchmarks: MariaDB (Aurora's stand-in), moto S3.

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
