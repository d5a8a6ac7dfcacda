"""MariaDB 10.11 on 127.0.0.1: Aurora MySQL's stand-in in the tests."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devtools.devservers._base import MARIADB_PACKAGES, _terminate, _wait_for_port, apt_install, free_port


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
