"""The workers' IAM policy as docs/deploy.md gives it, placeholders filled in: tests check the
documented policy itself, so the document and the doctor cannot drift apart."""

from __future__ import annotations

import json
import re

from tests.support.paths import REPO

MARKER = "<!-- doctor-tested: worker-policy -->"


def worker_policy(*, account: str, region: str, cluster: str, bucket: str, root: str, worker_role: str) -> dict:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    if MARKER not in text:
        raise AssertionError(f"docs/deploy.md lost its {MARKER} block (section 'Permissions and settings')")
    block = re.search(r"```json\n(.*?)\n```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None, f"no ```json block after {MARKER} in docs/deploy.md"
    filled = block.group(1)
    for name, value in {
        "account": account,
        "region": region,
        "cluster": cluster,
        "bucket": bucket,
        "root": root,
        "worker-role": worker_role,
    }.items():
        filled = filled.replace(f"<{name}>", value)
    leftover = re.findall(r"<[a-z-]+>", filled)
    assert not leftover, f"placeholders the test does not fill: {leftover}"
    return json.loads(filled)
