"""The two deployable dependency sets (requirements/airflow.txt, requirements/jobs.txt) and the dev set.

Each set is checked against the dev venv's installed metadata: every pin is exact and is the
version installed, and the set is closed under its packages' own requirements (evaluated for this
platform, extras included where a parent asks for them), so an image installing it with
``--no-deps`` passes ``pip check``. The DAG tasks never import the job libraries.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.paths import REPO

AIRFLOW_SET = REPO / "requirements" / "airflow.txt"
JOBS_SET = REPO / "requirements" / "jobs.txt"
DEV_SET = REPO / "requirements.txt"

JOB_LIBRARIES = ("torch", "xgboost", "sklearn", "matplotlib")
NEVER_IN_AIRFLOW = {"torch", "xgboost", "xgboost-cpu", "scikit-learn", "matplotlib", "moto", "pytest", "ruff"}


def pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a requirements file's own lines (``-r`` lines skipped)."""
    found: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and not req.marker, (
            f"{path.name}:{n}: {raw!r} is not an exact pin NAME==VERSION"
        )
        name = canonicalize_name(req.name)
        assert name not in found, f"{path.name}:{n}: {req.name} is pinned twice"
        found[name] = specs[0].version
    return found


# Markers are evaluated for this interpreter and for the images' (Debian 12: CPython 3.11.2), whose
# older patch release pulls in more (redis needs async-timeout below 3.11.3).
IMAGE_PYTHON = {"python_full_version": "3.11.2", "python_version": "3.11"}


def closure(tops: list[str]) -> dict[str, set[str]]:
    """Every installed distribution ``tops`` need here or in the images, with the extras asked of it."""
    seen: dict[str, set[str]] = {}
    stack = [Requirement(t) for t in tops]
    while stack:
        req = stack.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is required (by the set) but not installed in the dev venv")
        for spec in dist.requires or []:
            dep = Requirement(spec)
            if dep.marker and not any(
                dep.marker.evaluate({**python, "extra": e})
                for e in ["", *sorted(seen[name])]
                for python in ({}, IMAGE_PYTHON)
            ):
                continue
            stack.append(dep)
    return seen


def installed_version(name: str) -> Version:
    # The local label goes: torch==2.13.0 is the pin, 2.13.0+cpu the build installed here.
    return Version(Version(distribution(name).version).public)


@pytest.mark.parametrize("path", [AIRFLOW_SET, JOBS_SET, DEV_SET], ids=lambda p: p.name)
def test_every_pin_is_the_installed_version(path: Path) -> None:
    wrong = {
        name: (version, str(installed_version(name)))
        for name, version in pins(path).items()
        if installed_version(name) != Version(version)
    }
    assert not wrong, f"{path.relative_to(REPO)} pins differ from the dev venv (pinned, installed): {wrong}"


@pytest.mark.parametrize("path", [AIRFLOW_SET, JOBS_SET], ids=lambda p: p.name)
def test_each_set_is_closed_under_its_dependencies(path: Path) -> None:
    pinned = pins(path)
    needed = closure(list(pinned))
    missing = sorted(set(needed) - set(pinned))
    assert not missing, f"{path.relative_to(REPO)} lacks dependencies of its own packages: {missing}"


@pytest.mark.parametrize("path", [AIRFLOW_SET, JOBS_SET], ids=lambda p: p.name)
def test_every_pin_installs_on_debian_12s_python(path: Path) -> None:
    """The images' base (Debian 12) has CPython 3.11.2: a pin that needs a later 3.11 fails the build."""
    from packaging.specifiers import SpecifierSet

    too_new = {
        name: distribution(name).metadata["Requires-Python"]
        for name in pins(path)
        if distribution(name).metadata.get("Requires-Python")
        and "3.11.2" not in SpecifierSet(distribution(name).metadata["Requires-Python"])
    }
    assert not too_new, f"{path.relative_to(REPO)}: pins that need a newer Python than 3.11.2: {too_new}"


def test_sets_agree_where_they_overlap_and_the_dev_set_holds_both() -> None:
    airflow, jobs, dev = pins(AIRFLOW_SET), pins(JOBS_SET), pins(DEV_SET)
    clash = {n: (airflow[n], jobs[n]) for n in set(airflow) & set(jobs) if airflow[n] != jobs[n]}
    assert not clash, f"airflow.txt and jobs.txt pin different versions: {clash}"
    text = DEV_SET.read_text()
    assert "-r requirements/airflow.txt" in text and "-r requirements/jobs.txt" in text
    assert not set(dev) & (set(airflow) | set(jobs)), "the dev set repeats a pin of a deployable set"
    # Everything in the venv is pinned somewhere: the dev set is the whole environment.
    allowed_unpinned = {"mlbatch", "pip", "wheel"}
    unpinned = sorted(
        {canonicalize_name(d.metadata["Name"]) for d in distributions()}
        - set(airflow)
        - set(jobs)
        - set(dev)
        - allowed_unpinned
    )
    assert not unpinned, f"installed in the venv but pinned nowhere: {unpinned}"


def test_airflow_set_holds_no_job_or_test_libraries_and_both_metadata_drivers() -> None:
    airflow = pins(AIRFLOW_SET)
    assert not NEVER_IN_AIRFLOW & set(airflow), sorted(NEVER_IN_AIRFLOW & set(airflow))
    # Airflow 3.3 derives the async metadata URL from the sync one: both drivers per database.
    for driver in ("psycopg2-binary", "asyncpg", "pymysql", "aiomysql"):
        assert driver in airflow, f"requirements/airflow.txt lacks the metadata DB driver {driver}"
    assert airflow["celery"] == "5.6.3"  # 5.7.0 breaks the Celery provider
    jobs = pins(JOBS_SET)
    for lib in ("torch", "xgboost", "scikit-learn"):
        assert lib in jobs


def test_job_images_take_their_pins_from_the_jobs_set() -> None:
    assert not list((REPO / "docker").glob("requirements*.txt")), "docker/ must not keep its own pins"
    jobs = pins(JOBS_SET)
    for kind in ("train", "score"):
        dockerfile = (REPO / "docker" / f"{kind}.Dockerfile").read_text()
        assert "COPY requirements/jobs.txt" in dockerfile
    score = (REPO / "docker" / "score.Dockerfile").read_text()
    subset = re.search(r"grep -E '\^\(([a-z|]+)\)==' /tmp/req/jobs.txt", score)
    assert subset, "score.Dockerfile no longer selects its packages from jobs.txt"
    assert set(subset.group(1).split("|")) <= set(jobs)
    assert "requirements/airflow.txt" in (REPO / "docker" / "airflow.Dockerfile").read_text()


def test_dag_tasks_never_import_the_job_libraries() -> None:
    """Import every mlbatch module and build every DAG in a fresh interpreter: no job library loads."""
    code = f"""
import importlib, json, pkgutil, sys
import mlbatch
for info in pkgutil.walk_packages(mlbatch.__path__, "mlbatch."):
    importlib.import_module(info.name)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / "dags")!r})
print(json.dumps({{"dags": sorted(bag.dags), "errors": list(bag.import_errors),
                  "loaded": sorted(m for m in {JOB_LIBRARIES!r} if m in sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    specs = sorted(p.stem for p in (REPO / "dags" / "specs").glob("*.yaml"))
    assert {f"{m}__score" for m in specs} <= set(result["dags"]) and not result["errors"], result
    assert result["loaded"] == [], f"importing mlbatch or the DAGs loaded job libraries: {result['loaded']}"


def test_no_module_a_task_runs_imports_a_job_library_even_lazily() -> None:
    """Function-level imports too (they run in a task, not at import). The benchmark, which may,
    lives in devtools/, outside the package."""
    offenders = []
    for path in [*(REPO / "plugins" / "mlbatch").rglob("*.py"), *(REPO / "dags").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in JOB_LIBRARIES
            ]
    assert not offenders, offenders
