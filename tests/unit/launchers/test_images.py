"""What goes into each image (and so into its content hash), the Airflow image's entrypoint, and the
`mlbatch images` CLI's usage errors. Building and pushing are in tests/integration/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from mlbatch.backends.launchers.images import KINDS, content_hash, context_files
from mlbatch.cli.app import app
from typer.testing import CliRunner

from tests.support.paths import REPO


def copied_sources(kind: str) -> list[str]:
    """Sources of the Dockerfile's COPY lines (build-stage copies and globs left out)."""
    sources = []
    for line in (REPO / "docker" / f"{kind}.Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += [p for p in parts[:-1] if "*" not in p]
    return sources


@pytest.mark.parametrize("kind", KINDS)
def test_every_file_an_image_copies_is_part_of_its_hash(kind: str) -> None:
    files = {str(p) for p in context_files(kind)}
    for source in copied_sources(kind):
        inside = {f for f in files if f == source.rstrip("/") or f.startswith(source.rstrip("/") + "/")}
        assert inside, f"docker/{kind}.Dockerfile copies {source}, which is not in its context/hash"
        assert all((REPO / f).is_file() for f in inside)


def test_airflow_image_holds_the_dags_and_plugins_and_of_jobs_only_what_mlbatch_imports() -> None:
    files = {str(p) for p in context_files("airflow")}
    assert {"requirements/airflow.txt", "docker/airflow-entrypoint.sh", "sql/aurora/schema.sql"} <= files
    assert "dags/device_gender.py" in files and "dags/specs/device_gender.yaml" in files
    assert "plugins/mlbatch/cli/app.py" in files and "plugins/.airflowignore" in files
    # mlbatch imports the jobs' contract and cpus; the jobs themselves run in their own images.
    assert sorted(f for f in files if f.startswith("jobs/")) == ["jobs/__init__.py", "jobs/contract.py", "jobs/cpus.py"]
    assert "requirements/jobs.txt" not in files
    # Demo, benchmark, synthetic data and test servers are development tools: never deployed.
    assert not [f for f in files if f.startswith("devtools/") or "/devtools/" in f]
    assert not [f for f in files if Path(f).stem in ("bench", "demo", "devservers", "synth") and "commands" not in f]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for kind in ("train", "score"):
        job_files = {str(p) for p in context_files(kind)}
        assert "requirements/jobs.txt" in job_files and "jobs/train.py" in job_files
        assert not [f for f in job_files if f.startswith(("plugins/", "dags/"))]


def test_hashes_differ_by_kind_and_build_args() -> None:
    hashes = {kind: content_hash(kind, {}, "base", None) for kind in KINDS}
    assert len(set(hashes.values())) == len(KINDS)
    assert content_hash("train", {"TORCH": "none"}, "base", None) != content_hash(
        "train", {"TORCH": "pypi"}, "base", None
    )
    assert content_hash("airflow", {}, "base-a", None) != content_hash("airflow", {}, "base-b", None)
    assert re.fullmatch(r"[0-9a-f]{16}", hashes["airflow"])


def test_no_dockerfile_has_airflow_as_its_entrypoint() -> None:
    text = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/entrypoint"]' in text
    assert not re.search(r'^ENTRYPOINT \["airflow"', text, re.M)
    assert re.search(r"^USER 50000:0$", text, re.M)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["bash", "-c", "echo chart-form"], "chart-form"),  # `bash -c "exec airflow scheduler"` runs as given
        (["airflow", "scheduler"], "fake-airflow scheduler"),
        (["scheduler"], "fake-airflow scheduler"),  # a bare subcommand gets `airflow` in front
        (["celery", "worker"], "fake-airflow celery worker"),
        ([], "fake-airflow version"),
    ],
)
def test_entrypoint_runs_commands_as_the_helm_chart_gives_them(
    tmp_path: Path, command: list[str], expected: str
) -> None:
    fake = tmp_path / "airflow"
    fake.write_text('#!/bin/sh\necho fake-airflow "$@"\n')
    fake.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(REPO / "docker" / "airflow-entrypoint.sh"), *command],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, expected), proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["images", "build", "trian"], "unknown image trian"),
        (["images", "build", "score", "--torch", "cuda"], "--torch 'cuda'"),
        (["images", "push", "score", "--registry", "https://example.com"], "without a scheme"),
    ],
)
def test_cli_usage_errors_exit_2_before_touching_docker(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.exit_code == 2, result.output
    assert message in result.output
