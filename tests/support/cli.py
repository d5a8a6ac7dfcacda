"""``mlbatch`` run as a user runs it, in a subprocess on the embedded stack under ``home``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO

BIN = Path(sys.executable).parent
DS = "2026-11-22"  # the day the end-to-end tests run


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLBATCH_"))}
    env.update(
        MLBATCH_HOME=str(home),
        AIRFLOW_HOME=str(REPO),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        **extra,
    )
    return env


def mlbatch(home: Path, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "mlbatch"), *args], env=cli_env(home, **extra), capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mlbatch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
