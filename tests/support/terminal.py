"""Lines printed past pytest's capture."""

from __future__ import annotations

import pytest


def say(config: pytest.Config, line: str) -> None:
    """Print past pytest's capture: build times and image sizes belong in every run's output."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[docker] {line}")
