"""Feature SQL: strict rendering, safe literals, the UNLOAD text, and the DuckDB transpile."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import sqlglot
from mlbatch.backends.warehouse.sql import (
    SqlTemplateError,
    render,
    render_spec_query,
    sqldate,
    sqlnum,
    sqlstr,
    strip_comments,
    to_duckdb,
    unload_statement,
)
from mlbatch.spec import load_spec

from tests.support.paths import REPO
from tests.support.warehouse import synth_warehouse

ROLE = "arn:aws:iam::123456789012:role/mlbatch-unload"

TEMPLATE = """\
-- leading comment: it's dropped
SELECT device_id, /* inline, with a 'quote' */ os,
{%- for c in params.cols %}
    {{ c }},
{%- endfor %}
    'it''s -- not a comment' AS s  -- trailing comment
FROM analytics.devices
WHERE os LIKE {{ params.pattern | sqlstr }}
  AND first_seen < {{ ds | sqldate }}
  AND sessions_30d > {{ params.min_sessions }};
"""

EXPECTED_UNLOAD = """\
UNLOAD ('SELECT device_id, os,
    share_games,
    share_beauty,
    ''it''''s -- not a comment'' AS s
FROM analytics.devices
WHERE os LIKE ''%o''''s%''
  AND first_seen < CAST(''2026-11-22'' AS DATE)
  AND sessions_30d > 3')
TO 's3://bucket/unload/device_gender/train/2026-11-22/'
IAM_ROLE 'arn:aws:iam::123456789012:role/mlbatch-unload'
FORMAT AS PARQUET
PARALLEL ON
MANIFEST VERBOSE
MAXFILESIZE 128 MB"""

PARAMS = {"cols": ["share_games", "share_beauty"], "pattern": "%o's%", "min_sessions": 3}


def _unload() -> str:
    query = render(TEMPLATE, ds="2026-11-22", params=PARAMS)
    return unload_statement(query, s3_prefix="s3://bucket/unload/device_gender/train/2026-11-22/", iam_role=ROLE)


def test_unload_text_is_golden() -> None:
    assert _unload() == EXPECTED_UNLOAD


def test_unload_inner_query_round_trips_and_parses_as_redshift() -> None:
    text = _unload()
    body = text[len("UNLOAD ('") : text.index("')\nTO ")]
    # The body is a Redshift string literal: sqlglot's Redshift tokenizer reads back the query.
    literal = sqlglot.parse_one(f"SELECT '{body}'", read="redshift").expressions[0]
    inner = literal.this
    assert inner == strip_comments(render(TEMPLATE, ds="2026-11-22", params=PARAMS)).strip()
    assert "--" not in inner.replace("-- not a comment", "") and "/*" not in inner
    parsed = sqlglot.parse_one(inner, read="redshift")
    assert [e.alias_or_name for e in parsed.expressions] == [
        "device_id",
        "os",
        "share_games",
        "share_beauty",
        "s",
    ]


def test_backslashes_are_doubled_inside_unload() -> None:
    text = unload_statement(r"SELECT 'a\\b' AS x", s3_prefix="s3://b/p/", iam_role=ROLE)
    assert text.startswith(r"UNLOAD ('SELECT ''a\\\\b'' AS x')")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT 1 FROM t LIMIT 5", "LIMIT"),
        ("SELECT 1; SELECT 2", "more than one statement"),
        ("DELETE FROM t", "SELECT"),
        ("SELECT FROM WHERE (", "does not parse"),
    ],
)
def test_unload_rejects_what_redshift_would(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unload_statement(query, s3_prefix="s3://b/p/", iam_role=ROLE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"s3_prefix": "s3://b/p"}, "ending in '/'"),
        ({"s3_prefix": "file:///tmp/x/"}, "s3://"),
        ({"iam_role": "arn:aws:iam::1:role/x' --"}, "IAM role ARN"),
        ({"max_file_size_mb": 2}, "MAXFILESIZE"),
    ],
)
def test_unload_checks_its_arguments(kwargs: dict, message: str) -> None:
    args = {"s3_prefix": "s3://b/p/", "iam_role": ROLE, **kwargs}
    with pytest.raises(ValueError, match=message):
        unload_statement("SELECT 1", **args)


def test_strict_undefined_names_the_variable_and_line() -> None:
    with pytest.raises(SqlTemplateError, match=r"features\.sql, line 3: 'dict object' has no attribute 'lookback'"):
        render(
            "SELECT 1\nFROM t\nWHERE x > {{ params.lookback }}",
            ds="2026-11-22",
            params={},
            source="features.sql",
        )
    with pytest.raises(SqlTemplateError, match="'nope' is undefined"):
        render("SELECT {{ nope }}", ds="2026-11-22", params={})


def test_values_render_only_as_safe_literals() -> None:
    params = {"n": 30, "f": 0.5, "b": True}
    assert render("{{ ds }}|{{ params.n }}|{{ params.f }}|{{ params.b }}", ds="2026-11-22", params=params) == (
        "2026-11-22|30|0.5|TRUE"
    )
    with pytest.raises(SqlTemplateError, match=r"line 1: refusing to render .*\| sqlstr"):
        render("SELECT {{ params.s }}", ds="2026-11-22", params={"s": "1; DROP TABLE x"})
    with pytest.raises(SqlTemplateError, match="ds must be an ISO date"):
        render("SELECT 1", ds="2026-02-30", params={})
    with pytest.raises(SqlTemplateError, match="ds must be an ISO date"):
        render("SELECT 1", ds="'; DROP TABLE x; --", params={})
    with pytest.raises(SqlTemplateError, match="line 2: sqlnum expects a number, got the string '1 OR 1=1'"):
        render("SELECT\n{{ params.n | sqlnum }}", ds="2026-11-22", params={"n": "1 OR 1=1"})


def test_filters() -> None:
    assert sqlstr("O'Brien \\ 'x'") == "'O''Brien \\\\ ''x'''"
    assert sqlnum(3) == "3" and sqlnum(0.25) == "0.25" and sqlnum(" -1.5e3 ") == "-1.5e3"
    assert sqldate("2026-11-22") == "CAST('2026-11-22' AS DATE)"
    for bad in (True, float("nan"), "3; x", None):
        with pytest.raises(SqlTemplateError):
            sqlnum(bad)
    with pytest.raises(SqlTemplateError):
        sqlstr(3)


@pytest.mark.parametrize("value", ["O'Brien", "a\\b", "'; DROP TABLE ml_labels; --", "50%", "ünï\u00a0code"])
def test_sqlstr_round_trips_through_redshift_parse_and_duckdb(value: str) -> None:
    redshift = f"SELECT {sqlstr(value)} AS v"
    assert sqlglot.parse_one(redshift, read="redshift").expressions[0].this.this == value
    assert duckdb.sql(to_duckdb(redshift)).fetchall() == [(value,)]


def test_to_duckdb_rejects_several_statements() -> None:
    with pytest.raises(ValueError, match="one query"):
        to_duckdb("SELECT 1; SELECT 2")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_warehouse(tmp_path_factory, n_devices=3_000)


def _columns(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [d[0] for d in con.sql(sql).description]


def test_device_gender_templates_transpile_and_run_in_duckdb(warehouse: Path) -> None:
    spec = load_spec(REPO / "dags/specs/device_gender.yaml")
    training = render_spec_query(spec, "training", "2026-11-22")
    scoring = render_spec_query(spec, "scoring", "2026-11-22")
    for query in (training, scoring):
        sqlglot.parse_one(query, read="redshift")
        unload_statement(query, s3_prefix="s3://b/p/", iam_role=ROLE)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        train_cols = _columns(con, to_duckdb(training))
        assert train_cols == _columns(con, to_duckdb(scoring)), "training and scoring features differ"
        assert train_cols[0] == "device_id" and "gender" not in train_cols and len(train_cols) >= 30
        (n_train,) = con.execute(f"SELECT count(*) FROM ({to_duckdb(training)})").fetchone()
        (n_score,) = con.execute(f"SELECT count(*) FROM ({to_duckdb(scoring)})").fetchone()
        (want_train,) = con.execute(
            "SELECT count(*) FROM analytics.devices WHERE first_seen < DATE '2026-11-22'"
        ).fetchone()
        (want_score,) = con.execute(
            "SELECT count(*) FROM analytics.devices "
            "WHERE last_seen >= DATE '2026-10-23' AND first_seen <= DATE '2026-11-22'"
        ).fetchone()
    assert (n_train, n_score) == (want_train, want_score)
    assert 0 < n_score < n_train  # some devices are inactive


def test_render_spec_query_errors_name_the_file(tmp_path: Path) -> None:
    spec = load_spec(REPO / "dags/specs/device_gender.yaml")
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT 1\nWHERE {{ params.nope }}\n")
    broken = spec.model_copy(update={"features": spec.features.model_copy(update={"training_sql": str(bad)})})
    with pytest.raises(SqlTemplateError, match=rf"{bad}, line 2: .*'nope'"):
        render_spec_query(broken, "training", "2026-11-22")
    missing = spec.model_copy(
        update={"features": spec.features.model_copy(update={"scoring_sql": str(tmp_path / "gone.sql")})}
    )
    with pytest.raises(SqlTemplateError, match="gone.sql"):
        render_spec_query(missing, "scoring", "2026-11-22")
