"""docs/deploy.md, read as a new team reads it, leads to files in deploy/, each checked by a test,
and the tests it names beside its claims exist."""

from __future__ import annotations

import re

from tests.support.paths import REPO
from tests.unit.deploy import test_aws_files

DEPLOY = REPO / "deploy"
DOC = (REPO / "docs" / "deploy.md").read_text()

# deploy/ files checked outside test_aws_files, and the test module that checks each.
OTHER_CHECKS = {
    "helm/values.yaml": "tests/unit/deploy/test_helm_values.py",
    "helm/connections-secret.example.yaml": "tests/unit/deploy/test_helm_values.py",
    "mwaa/build-bundle.sh": "tests/integration/deploy/test_mwaa_bundle.py",
    "mwaa/startup.sh": "tests/integration/deploy/test_mwaa_bundle.py",
    "mwaa/create-pools.sh": "tests/unit/deploy/test_mwaa_pools.py",
}


def deploy_files() -> set[str]:
    return {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()} - {"README.md"}


def test_every_file_in_deploy_is_checked_by_a_test():
    checked = set(test_aws_files.REQUESTS) | set(test_aws_files.POLICIES) | set(test_aws_files.TRUST)
    assert deploy_files() == checked | set(OTHER_CHECKS)
    for rel, module in OTHER_CHECKS.items():
        source = (REPO / module).read_text()
        assert rel.rsplit("/", 1)[-1] in source, f"{module} does not read deploy/{rel}"


def test_the_runbook_leads_to_every_file():
    for rel in deploy_files():
        folder, _, name = rel.rpartition("/")
        assert f"deploy/{rel}" in DOC or (f"deploy/{folder.split('/')[0]}/" in DOC and name in DOC), rel


def test_every_test_the_runbook_names_exists():
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    defined = set(re.findall(r"^def (test_\w+)", sources, re.M))
    named = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", DOC)) | set(re.findall(r"::(test_\w+)", DOC))
    assert named, "the runbook names no test"
    assert named <= defined, sorted(named - defined)
    for path in set(re.findall(r"`(tests/[\w/]+\.py)", DOC)):
        assert (REPO / path).is_file(), path


def test_the_runbook_says_only_what_the_code_does():
    # Fixed claims of issue 24: each was false when followed.
    assert "RENAME TABLE" not in DOC and "EXCHANGE PARTITION" in DOC
    assert "has no\n`mlbatch` script" not in DOC and "has no `mlbatch` script" not in DOC
    assert "KubernetesExecutor" not in DOC
    assert "mlbatch-cpu` (Fargate" not in DOC
    assert "12.8" not in DOC
