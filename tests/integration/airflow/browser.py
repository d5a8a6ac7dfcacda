"""A real browser for the UI tests: Playwright (PyPI) driving Debian's Chromium (installed with
apt when missing; Playwright's own browser download cannot run here and is never used).

:func:`signed_in` opens a page signed into the Airflow UI through its login form, as an engineer
would; on any failure inside it, a screenshot and the page's HTML go to ``artifacts`` so a red
run shows what the browser saw.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Flags this machine needs: no sandbox as root, and no background traffic (the network is closed).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # the React UI on a busy 2-core machine


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


def keep(page: Page, artifacts: Path, name: str) -> Path:
    """A full-page screenshot in ``artifacts`` (the evidence of a UI step)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    return shot


@contextmanager
def signed_in(url: str, user: str, password: str, artifacts: Path) -> Iterator[Page]:
    """A Chromium page signed into the Airflow UI at ``url`` through the login form."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(f"{url}/auth/login")
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
            yield page
        except Exception:
            stamp = time.strftime("%H%M%S")
            artifacts.mkdir(parents=True, exist_ok=True)
            try:
                keep(page, artifacts, f"failure-{stamp}")
                (artifacts / f"failure-{stamp}.html").write_text(page.content())
            except Exception:  # the page itself may be gone; the original error matters more
                pass
            raise
        finally:
            browser.close()
