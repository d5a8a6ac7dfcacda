"""The MWAA bundle, built exactly as docs/deploy.md says (deploy/mwaa/build-bundle.sh), imports every
DAG in a fresh interpreter that sees only the bundle and the installed requirements.

MWAA extracts plugins.zip into /usr/local/airflow/plugins (on sys.path) and syncs the DAGs folder
to /usr/local/airflow/dags; the probe lays the bundle out the same way under a temporary root and
runs ``python -I -S`` (no PYTHONPATH, no user site, no .pth files: the repo's editable install is
invisible) with sys.path = the standard library, the extracted plugins and the venv's
site-packages, and the environment of deploy/mwaa/startup.sh with /usr/local/airflow mapped to
that root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPO

BUILD = REPO / "deploy" / "mwaa" / "build-bundle.sh"
SPECS = sorted(p.stem for p in (REPO / "dags" / "specs").glob("*.yaml"))

PROBE = r"""
import json, sys
plugins, site_packages = sys.argv[1], sys.argv[2]
sys.path[:0] = [plugins]
sys.path.append(site_packages)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[3])
report = {"dags": sorted(bag.dags), "errors": {k: v.splitlines()[-1] for k, v in bag.import_errors.items()}}
if not bag.import_errors:
    import mlbatch, jobs, mlbatch_plugin
    from mlbatch.backends.env import Environment
    from mlbatch.backends.launchers.ecs import EcsConfig
    env, ecs = Environment.from_env(), EcsConfig.from_env()
    report["files"] = {m.__name__: m.__file__ for m in (mlbatch, jobs, mlbatch_plugin)}
    report.update(launcher=env.launcher_kind, cluster=ecs.cluster, specs_dir=str(env.specs_dir))
print(json.dumps(report))
"""


def startup_environment(root: Path, startup: Path) -> dict[str, str]:
    """What MWAA's components get from startup.sh, with /usr/local/airflow under ``root``."""
    out = subprocess.run(
        ["sh", "-c", f'. "{startup}" && env -0'], env={"PATH": os.environ["PATH"]}, capture_output=True, check=True
    ).stdout.decode()
    exported = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v.replace("/usr/local/airflow", str(root)) for k, v in exported.items() if k.startswith("MLBATCH_")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mwaa") / "build"
    result = subprocess.run([str(BUILD), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def lay_out(bundle: Path, root: Path) -> Path:
    """/usr/local/airflow as MWAA makes it: dags/ synced, plugins.zip extracted into plugins/."""
    shutil.copytree(bundle / "dags", root / "dags")
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(root / "plugins")
    return root


def probe(root: Path, bundle: Path) -> dict:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "AIRFLOW_HOME": str(root / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'airflow.db'}",
        **startup_environment(root, bundle / "startup.sh"),
    }
    site_packages = sysconfig.get_paths()["purelib"]
    command = [sys.executable, "-I", "-S", "-c", PROBE, str(root / "plugins"), site_packages, str(root / "dags")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bundle_holds_what_the_doc_lists(bundle):
    names = set(zipfile.ZipFile(bundle / "plugins.zip").namelist())
    assert {"mlbatch/__init__.py", "mlbatch_plugin.py", "jobs/__init__.py", "jobs/contract.py", "jobs/cpus.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert sorted(p.name for p in (bundle / "dags" / "specs").glob("*.yaml")) == [f"{s}.yaml" for s in SPECS]
    assert (bundle / "dags" / "sql" / "aurora" / "schema.sql").is_file()
    requirements = (bundle / "requirements.txt").read_text()
    assert "apache-airflow==" not in requirements and "apache-airflow-providers" not in requirements
    assert "PyMySQL==" in requirements or "pymysql==" in requirements.lower()


def test_every_dag_imports_from_the_bundle_alone(bundle, tmp_path):
    report = probe(lay_out(bundle, tmp_path / "usr-local-airflow"), bundle)
    assert report["errors"] == {}
    for spec in SPECS:
        for kind in ("labels", "train", "score"):
            assert f"{spec}__{kind}" in report["dags"]
    # Everything came from the bundle, nothing from the checkout.
    for module, path in report["files"].items():
        assert path.startswith(str(tmp_path)), (module, path)
    assert report["launcher"] == "ecs" and report["cluster"] == "mlbatch"
    assert report["specs_dir"] == str(tmp_path / "usr-local-airflow" / "dags" / "specs")


def test_without_jobs_in_plugins_zip_every_dag_fails(bundle, tmp_path):
    """The old recipe (no jobs/ in plugins.zip): mlbatch.spec imports jobs.contract, so nothing parses.
    Proves the probe above sees only the bundle."""
    root = lay_out(bundle, tmp_path / "usr-local-airflow")
    shutil.rmtree(root / "plugins" / "jobs")
    report = probe(root, bundle)
    assert report["dags"] == []
    assert sorted(Path(f).stem for f in report["errors"]) == SPECS
    assert all("No module named 'jobs'" in e for e in report["errors"].values()), report["errors"]


def test_requirements_resolve_with_the_airflow_set(bundle, tmp_path):
    """MWAA's own constraints file cannot be fetched here; the bundle's requirements are resolved
    (pip's resolver, dry run) with the Airflow release and providers they were pinned beside."""
    provided = [
        line
        for line in (REPO / "requirements" / "airflow.txt").read_text().splitlines()
        if line.startswith(("apache-airflow==", "apache-airflow-"))
    ]
    assert any(line.startswith("apache-airflow==") for line in provided)
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    command += ["--report", str(report), "-r", str(bundle / "requirements.txt"), *provided]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    installed = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (bundle / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert pinned <= {name.replace("_", "-") for name in installed}
