"""`mlbatch sql SPEC --ds DATE`: the full printed text is golden, and every statement parses.

Regenerate the golden file after an intended change with
``MLBATCH_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_features_statements.py`` and review
the diff: it is exactly what production would run differently.
"""

from __future__ import annotations

import os
import re

import pytest
import sqlglot
from mlbatch.cli.app import app
from sqlglot import exp
from typer.testing import CliRunner

from tests.support.paths import REPO

GOLDEN = REPO / "tests/golden/sql_device_gender_2026-11-22.txt"
ENV = {
    "MLBATCH_S3_BUCKET": "mlbatch-prod",
    "MLBATCH_REDSHIFT_IAM_ROLE": "arn:aws:iam::123456789012:role/mlbatch-redshift",
}


@pytest.fixture(scope="module")
def printed() -> str:
    env = {k: v for k, v in os.environ.items() if k != "MLBATCH_OBJECT_STORE"}
    result = CliRunner().invoke(app, ["sql", "device_gender", "--ds", "2026-11-22"], env={**env, **ENV})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_printed_statements_are_golden(printed: str) -> None:
    if os.environ.get("MLBATCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(printed)
    assert printed == GOLDEN.read_text()


def _statements(printed: str) -> list[tuple[str, str]]:
    blocks = re.findall(r"^-- ([^\n]+)\n(.*?);\n(?:\n|\Z)", printed, flags=re.S | re.M)
    assert blocks and sum(len(t) + len(s) for t, s in blocks) > 0.9 * len(printed)
    return blocks


def test_every_statement_parses(printed: str) -> None:
    blocks = _statements(printed)
    unloads = [s for t, s in blocks if s.startswith("UNLOAD (")]
    assert len(unloads) == 2
    for text in unloads:
        body = text[len("UNLOAD (") : text.index(")\nTO '")]
        inner = sqlglot.parse_one(f"SELECT {body}", read="redshift").expressions[0].this  # the literal's value
        query = sqlglot.parse_one(inner, read="redshift")
        assert isinstance(query, exp.Select) and query.expressions[0].alias_or_name == "device_id"
        assert len(query.expressions) >= 30
        assert re.search(r"\nTO 's3://mlbatch-prod/unload/device_gender/(train|score)/2026-11-22/<run>/'\n", text)
    for title, text in blocks:
        if text.startswith("UNLOAD (") or text.startswith("LOAD DATA") or "%(" in text or "VALUES IN (" in text:
            # sqlglot has no grammar for LOAD DATA, bound-parameter markers or partition definitions:
            # see unit/appdb/test_publish_statements (and integration/publish/test_mariadb, which runs them)
            continue
        dialect = "mysql" if title.startswith("Aurora") else "redshift"
        parsed = sqlglot.parse_one(text, read=dialect)
        assert parsed is not None, f"{title}: {text}"
