"""The synthetic warehouse: deterministic, with a learnable non-linear signal, and a label sheet
carrying the analyst errors the labels check must handle."""

from __future__ import annotations

import csv
import unicodedata
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pytest
import xgboost as xgb
from mlbatch.backends.warehouse.sql import render_spec_query, to_duckdb
from mlbatch.spec import load_spec
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from devtools.synth import LABEL_HEADER, build_warehouse, write_label_sheet
from tests.support.paths import REPO
from tests.support.warehouse import synth_warehouse

N = 20_000


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_warehouse(tmp_path_factory, n_devices=N)


def _dump(path: Path) -> dict[str, object]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            t: con.sql(f"SELECT * FROM {t} ORDER BY device_id").to_arrow_table()
            for t in ("analytics.devices", "analytics._truth_device_gender")
        }


def test_build_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    build_warehouse(a, n_devices=2_000)
    build_warehouse(b, n_devices=2_000)
    first = _dump(a)
    assert first == _dump(b)
    build_warehouse(a, n_devices=2_000)  # rebuilt in place: same rows, no duplicates
    assert _dump(a) == first
    build_warehouse(b, n_devices=2_000, seed=8)
    assert _dump(b) != first


def test_devices_table_shape(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        n, distinct, ios, countries, inactive, null_price, max_last = con.execute(
            "SELECT count(*), count(DISTINCT device_id), avg((os = 'ios')::int), count(DISTINCT country), "
            "avg((last_seen < DATE '2026-10-23')::int), avg((device_price_usd IS NULL)::int), max(last_seen) "
            "FROM analytics.devices"
        ).fetchone()
        n_columns = len(con.execute("SELECT * FROM analytics.devices LIMIT 0").description)
        genders = dict(con.execute("SELECT gender, count(*) FROM analytics._truth_device_gender GROUP BY 1").fetchall())
    assert n == distinct == N and n_columns >= 30 and countries == 8
    assert 0.35 < ios < 0.55 and 0.1 < inactive < 0.3 and 0.01 < null_price < 0.05
    assert str(max_last) == "2026-11-22"
    assert set(genders) == {"female", "male"} and 0.4 < genders["female"] / N < 0.6


def test_signal_is_learnable_and_non_linear(warehouse: Path) -> None:
    query = to_duckdb(render_spec_query(load_spec(REPO / "dags/specs/device_gender.yaml"), "training", "2026-11-22"))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        df = con.execute(
            f"SELECT f.*, t.gender = 'female' AS y FROM ({query}) f "
            "JOIN analytics._truth_device_gender t USING (device_id) ORDER BY device_id"
        ).df()
    x = df.drop(columns=["device_id", "y"]).to_numpy(dtype=float)
    y = df["y"].to_numpy(dtype=int)
    rng = np.random.default_rng(0)
    test = rng.random(len(y)) < 0.25
    model = xgb.XGBClassifier(n_estimators=200, max_depth=5, learning_rate=0.1, tree_method="hist", n_jobs=2)
    model.fit(x[~test], y[~test])
    auc_xgb = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
    x_lin = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x_lin[~test], y[~test])
    auc_lr = roc_auc_score(y[test], linear.predict_proba(x_lin[test])[:, 1])
    assert auc_xgb >= 0.78, f"xgboost AUC {auc_xgb:.3f}"
    assert auc_lr <= auc_xgb - 0.07, f"logistic AUC {auc_lr:.3f} vs xgboost {auc_xgb:.3f}"


def _norm(value: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", value) if ch not in "\u200b\u200c\u200d\ufeff").strip()


def test_label_sheet_has_the_analyst_errors(warehouse: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "device_gender.csv"
    written = write_label_sheet(warehouse, sheet, n_labels=3_000)
    raw = sheet.read_bytes()
    assert b"\r" not in raw and raw.decode("utf-8")
    again = tmp_path / "again.csv"
    write_label_sheet(warehouse, again, n_labels=3_000)
    assert again.read_bytes() == raw

    with open(sheet, encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert tuple(header) == LABEL_HEADER
    data = [r for r in rows if any(c.strip() for c in r)]
    assert len(rows) - len(data) >= 1 and len(data) == written > 3_000
    assert all(r[4] == "" for r in rows)

    keys, labels = [r[0] for r in data], [r[1] for r in data]
    assert {"mael", "", "#N/A"} <= set(labels) and {"Female", "Male"} & set(labels)
    assert any(k.endswith("\u00a0") for k in keys)
    full_width = [k for k in keys if "\uff10" <= k[:1] <= "\uff19"]
    assert full_width and all(_norm(k).isascii() and _norm(k).isdigit() for k in full_width)
    assert any(r[3] == "'; DROP TABLE ml_labels; --" for r in data)

    by_key: dict[str, set[str]] = defaultdict(set)
    invalid = 0
    for key, label in ((_norm(r[0]), _norm(r[1]).casefold()) for r in data):
        if label in ("female", "male"):
            by_key[key].add(label)
        else:
            invalid += 1
    conflicts = {k for k, v in by_key.items() if len(v) > 1}
    conflict_rows = sum(1 for r in data if _norm(r[0]) in conflicts)
    duplicates = len(data) - len({tuple(map(_norm, r[:2])) for r in data})
    assert conflicts and duplicates >= 1
    assert 0.003 <= (invalid + conflict_rows) / len(data) <= 0.02
    # The labels are the truth (apart from the deliberate errors).
    with duckdb.connect(str(warehouse), read_only=True) as con:
        truth = dict(con.execute("SELECT device_id::varchar, gender FROM analytics._truth_device_gender").fetchall())
    agree = [truth[k] == next(iter(v)) for k, v in by_key.items() if len(v) == 1]
    assert sum(agree) == len(agree)


# --- recipe_category ---------------------------------------------------------------------------


def test_recipes_do_not_change_the_device_tables(tmp_path: Path) -> None:
    from devtools.synth import build_warehouse as build

    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    build(a, n_devices=2_000, n_recipes=500)
    build(b, n_devices=2_000, n_recipes=3_000)
    assert _dump(a) == _dump(b)  # the recipes have their own random stream
    with duckdb.connect(str(a), read_only=True) as con:
        first = con.sql("SELECT * FROM analytics.recipes ORDER BY recipe_id").to_arrow_table()
    build(a, n_devices=2_000, n_recipes=500)
    with duckdb.connect(str(a), read_only=True) as con:
        assert con.sql("SELECT * FROM analytics.recipes ORDER BY recipe_id").to_arrow_table() == first


def test_recipes_table_and_queries(warehouse: Path) -> None:
    spec = load_spec(REPO / "dags/specs/recipe_category.yaml")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        n, distinct, null_title, edited, cats = con.execute(
            "SELECT count(*), count(DISTINCT recipe_id), avg((title IS NULL)::int), "
            "avg((updated_at > created_at)::int), (SELECT count(DISTINCT category) FROM "
            "analytics._truth_recipe_category) FROM analytics.recipes"
        ).fetchone()
        assert n == distinct == 50_000 and null_title < 0.01 and 0.1 < edited < 0.4 and cats == 5
        assert con.execute("SELECT count(*) FROM analytics.recipes WHERE updated_at < created_at").fetchone() == (0,)
        train = to_duckdb(render_spec_query(spec, "training", "2026-11-22"))
        score = to_duckdb(render_spec_query(spec, "scoring", "2026-11-22"))
        n_train = con.execute(f"SELECT count(*) FROM ({train})").fetchone()[0]
        cols = [d[0] for d in con.execute(f"SELECT * FROM ({score}) LIMIT 0").description]
        n_score, stale = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE greatest(r.created_at, r.updated_at) < DATE '2026-10-23') "
            f"FROM ({score}) s JOIN analytics.recipes r USING (recipe_id)"
        ).fetchone()
    assert cols == ["recipe_id", "title", "n_ingredients", "prep_minutes", "calories"]
    assert n_train == 50_000 and 5_000 < n_score < 25_000 and stale == 0


def test_recipe_label_sheet_passes_the_labels_check(warehouse: Path, tmp_path: Path) -> None:
    from mlbatch.labels.check import check_labels, read_csv

    from devtools.synth import LABEL_SHEETS, RECIPE_LABEL_HEADER

    sheet = tmp_path / "recipe_category.csv"
    written = LABEL_SHEETS["recipe_category"](warehouse, sheet)
    again = tmp_path / "again.csv"
    LABEL_SHEETS["recipe_category"](warehouse, again)
    assert again.read_bytes() == sheet.read_bytes()
    spec = load_spec(REPO / "dags/specs/recipe_category.yaml")
    header, rows = read_csv(sheet)
    assert tuple(header) == RECIPE_LABEL_HEADER
    report = check_labels(
        header,
        rows,
        model=spec.name,
        key_column=spec.labels.columns.key,
        label_column=spec.labels.columns.label,
        classes=spec.labels.classes,
        key_type=spec.entity.type,
        max_invalid_fraction=spec.labels.max_invalid_fraction,
    )
    contract = report.to_contract()
    reasons = {r["reason"] for r in contract["rejected"]}
    assert contract["rows"] == written > 15_000 and not contract["blocked"]
    assert {"unknown_label", "missing_label", "cell_error", "conflict"} <= reasons
    assert 0.003 <= len(contract["rejected"]) / contract["rows"] <= spec.labels.max_invalid_fraction
    assert 14_900 < contract["accepted"] < 15_000
