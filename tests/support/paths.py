"""The repository's root, for the tests that read its files (specs, DAGs, requirements, Dockerfiles).

One definition here, so that no test module counts how deep it sits in tests/."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
