"""dockerd (shared, persistent: it outlives the tests) and a Docker registry (ECR's stand-in)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.devservers._base import _terminate, _wait_for_port, apt_install, free_port

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
