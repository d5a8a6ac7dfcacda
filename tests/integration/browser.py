"""Debian's Chromium for the UI tests (installed with apt when missing; no browser download)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# Flags this machine needs: no sandbox as root, and no background traffic (the network is closed).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"], env=env, check=True, capture_output=True, timeout=900
    )
    return shutil.which("chromium") or "chromium"


def screenshot(url: str, shot: Path, tmp: Path, *, budget_ms: int = 15000) -> bytes:
    """A PNG of ``url`` after the page had ``budget_ms`` of virtual time to fetch and render."""
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            chromium(),
            *FLAGS,
            "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium'}",
            "--window-size=1440,900",
            f"--virtual-time-budget={budget_ms}",  # let the React UI fetch and render before the shot
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stdout + proc.stderr
    return shot.read_bytes()
