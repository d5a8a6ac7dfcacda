"""Deterministic synthetic source tables for the example models ``device_gender`` and
``recipe_category``.

The embedded warehouse (a DuckDB file) stands in for Redshift; this module fills it with
``analytics.devices``: one row per device with ~30 usage features, a few nulls, and some
devices inactive in the last 30 days (so the scoring query has something to filter).

Each device also gets a hidden gender, drawn from a logit that depends on the features mostly
through thresholds and interactions (games x os, sports x weekends, a band of session lengths,
a U-shape in night usage). A gradient-boosted model recovers it (ROC AUC ~0.85 on 30k labels);
a linear model on the same columns cannot (~0.7). The truth lives in
``analytics._truth_device_gender`` and is read only to write the demo's label sheet.

``analytics.recipes`` (:mod:`devtools.synth_recipes`) holds recipes with a title, a
few numbers and timestamps; their category lives in ``analytics._truth_recipe_category``.

Everything follows from ``seed``: two builds give identical tables. The recipes draw from their
own random stream, so adding them left the device tables byte-for-byte as they were.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

# The recipe_category tables (re-exported: the tests and benchmarks take them from here).
from devtools.synth_recipes import (
    _RECIPE_SEED_OFFSET,
    RECIPE_CLASSES,
    RECIPE_LABEL_HEADER,
    RECIPE_TRUTH_TABLE,
    _recipes,
)

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "MX")
_COUNTRY_P = (0.30, 0.10, 0.10, 0.08, 0.12, 0.15, 0.07, 0.08)
# Country effect on the gender logit (a mild one: a one-hot linear model can learn it).
_COUNTRY_LOGIT = (0.0, 0.1, -0.1, 0.2, 0.3, -0.6, 0.5, 0.1)
APP_CATEGORIES = (
    "games", "beauty", "sports", "shopping", "finance", "news", "social",
    "video", "music", "health", "travel", "education", "other",
)  # fmt: skip
_CATEGORY_ALPHA = (1.2, 0.5, 0.6, 0.8, 0.5, 0.6, 2.0, 1.8, 1.0, 0.4, 0.3, 0.3, 1.0)
FIRST_DEVICE_ID = 10_000_000
TRUTH_TABLE = "analytics._truth_device_gender"
LABEL_HEADER = ("device_id", "gender", "labelled_by", "note", "status")
_ANALYSTS = ("ana.souza", "li.wei", "marta.k", "j.okafor", "sam.r")
_FULL_WIDTH = {ord(d): 0xFF10 + int(d) for d in "0123456789"}  # '1' -> '１': NFKC folds it back


def _features(rng: np.random.Generator, n: int, ref_date: date) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feature columns (without nulls) and the hidden female indicator."""
    ref = np.datetime64(ref_date, "D")
    age_days = rng.integers(0, 1000, n)
    first_seen = ref - age_days
    # ~80% active in the last 30 days; the rest last seen before that, after first_seen.
    active = rng.random(n) < 0.8
    recent = rng.integers(0, np.minimum(age_days, 29) + 1)
    stale_span = np.maximum(age_days - 31, 0)
    stale = 31 + (rng.random(n) * stale_span).astype(np.int64)
    last_seen = np.where(active | (age_days < 31), ref - recent, ref - stale)

    is_ios = rng.random(n) < 0.45
    country = rng.choice(len(COUNTRIES), n, p=_COUNTRY_P)
    price = np.where(is_ios, rng.lognormal(np.log(750), 0.35, n), rng.lognormal(np.log(280), 0.6, n))
    sessions = np.rint(rng.gamma(2.0, 60.0, n)).astype(np.int64) + 1
    avg_session_sec = rng.lognormal(np.log(200), 0.6, n)
    minutes = sessions * avg_session_sec / 60 * rng.lognormal(0, 0.1, n)
    active_days = np.minimum(30, rng.binomial(30, rng.beta(3, 2, n)) + 1)
    night_share = rng.beta(2, 6, n)
    weekend_share = rng.beta(5, 10, n)
    notif_open_rate = rng.beta(2, 5, n)
    font_scale = rng.choice(np.array([0.85, 1.0, 1.15, 1.3]), n, p=(0.1, 0.6, 0.2, 0.1))
    # Usage shares: a Dirichlet per device, drawn as normalised gammas.
    g = rng.gamma(np.array(_CATEGORY_ALPHA), 1.0, (n, len(APP_CATEGORIES)))
    shares = g / g.sum(axis=1, keepdims=True)
    share = {c: shares[:, i] for i, c in enumerate(APP_CATEGORIES)}

    # The hidden logit: thresholds and interactions, few purely linear terms.
    z = (
        1.2 * np.tanh((share["beauty"] - 0.05) / 0.015)
        + 2.4 * (share["games"] > 0.10) * np.where(is_ios, 1.0, -1.0)
        - 2.0 * ((share["sports"] > 0.06) ^ (weekend_share > 0.33))
        + 2.2 * ((avg_session_sec > 130) & (avg_session_sec < 280))
        - 60.0 * (night_share - 0.22) ** 2
        + 1.2 * ((share["shopping"] > 0.06) & (notif_open_rate > 0.3))
        + 0.6 * (font_scale >= 1.15)
        + np.array(_COUNTRY_LOGIT)[country]
    )
    z = 0.75 * (z - np.median(z))
    female = rng.random(n) < 1 / (1 + np.exp(-z))

    cols: dict[str, np.ndarray] = {
        "device_id": FIRST_DEVICE_ID + np.arange(n, dtype=np.int64),
        "first_seen": first_seen,
        "last_seen": last_seen,
        "os": np.where(is_ios, "ios", "android"),
        "country": np.array(COUNTRIES)[country],
        "device_price_usd": np.round(price, 2),
        "sessions_30d": sessions,
        "minutes_30d": np.round(minutes, 1),
        "active_days_30d": active_days,
        "avg_session_sec": np.round(avg_session_sec, 1),
        "night_share": np.round(night_share, 4),
        "weekend_share": np.round(weekend_share, 4),
        "notif_open_rate": np.round(notif_open_rate, 4),
        "battery_saver": (rng.random(n) < 0.25).astype(np.int32),
        "dark_mode": (rng.random(n) < 0.4).astype(np.int32),
        "font_scale": font_scale,
        "apps_installed": rng.poisson(rng.lognormal(np.log(70), 0.4, n)),
        "apps_uninstalled_30d": rng.poisson(2.0, n),
        "data_mb_30d": np.round(rng.lognormal(np.log(3000), 0.8, n), 1),
        "wifi_share": np.round(rng.beta(4, 3, n), 4),
        "screen_brightness_avg": np.round(rng.beta(5, 4, n), 4),
        "charging_sessions_30d": rng.poisson(35.0, n),
        **{f"share_{c}": np.round(share[c], 4) for c in APP_CATEGORIES},
    }
    return cols, female


# Columns with some nulls, and the share missing (devices that do not report them).
_NULL_FRACTION = {
    "device_price_usd": 0.03,
    "notif_open_rate": 0.02,
    "avg_session_sec": 0.01,
    "battery_saver": 0.04,
}


def _devices_table(rng: np.random.Generator, cols: dict[str, np.ndarray]) -> pa.Table:
    n = len(cols["device_id"])
    arrays = {}
    for name, values in cols.items():
        mask = rng.random(n) < _NULL_FRACTION[name] if name in _NULL_FRACTION else None
        if name in ("first_seen", "last_seen"):
            arrays[name] = pa.array(values.astype("datetime64[D]"), type=pa.date32())
        else:
            arrays[name] = pa.array(values, mask=mask)
    return pa.table(arrays)


def build_warehouse(
    path: Path,
    *,
    seed: int = 7,
    n_devices: int = 200_000,
    n_recipes: int = 50_000,
    ref_date: date = date(2026, 11, 22),
) -> None:
    """(Re)build the synthetic source tables in the DuckDB file at ``path``; idempotent."""
    rng = np.random.default_rng(seed)
    cols, female = _features(rng, n_devices, ref_date)
    devices = _devices_table(rng, cols)
    truth = pa.table({"device_id": cols["device_id"], "gender": np.where(female, "female", "male")})
    recipes, recipe_truth = _recipes(np.random.default_rng(seed + _RECIPE_SEED_OFFSET), n_recipes, ref_date)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("BEGIN")
        con.execute("CREATE SCHEMA IF NOT EXISTS analytics")
        con.register("devices_arrow", devices)
        con.register("truth_arrow", truth)
        con.register("recipes_arrow", recipes)
        con.register("recipe_truth_arrow", recipe_truth)
        con.execute("CREATE OR REPLACE TABLE analytics.devices AS SELECT * FROM devices_arrow")
        con.execute(f"CREATE OR REPLACE TABLE {TRUTH_TABLE} AS SELECT * FROM truth_arrow")
        con.execute("CREATE OR REPLACE TABLE analytics.recipes AS SELECT * FROM recipes_arrow")
        con.execute(f"CREATE OR REPLACE TABLE {RECIPE_TRUTH_TABLE} AS SELECT * FROM recipe_truth_arrow")
        con.execute("COMMIT")


def write_label_sheet(warehouse_path: Path, csv_path: Path, *, n_labels: int = 30_000, seed: int = 7) -> int:
    """Write the CSV export of an analyst's label sheet for device_gender.

    ``n_labels`` devices with their true gender, plus what analysts really type: per 1,000
    labels one each of a misspelled label ("mael"), an empty label, a ``#N/A`` cell and a
    conflicting pair (invalid: ~0.5% of rows, under the spec's 2%), and one each of a key with a
    trailing NBSP, a full-width-digit key, a capitalised label, a duplicate row and a note
    holding SQL (all valid), plus one blank row. Returns the number of non-blank data rows.
    """
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        truth = con.execute(f"SELECT device_id, gender FROM {TRUTH_TABLE} ORDER BY device_id").fetchall()
    return _write_sheet(
        truth,
        warehouse_path,
        csv_path,
        n_labels=n_labels,
        seed=seed,
        header=LABEL_HEADER,
        typo="mael",
        other_label=lambda label, _: "male" if label == "female" else "female",
        what="devices",
    )


def write_recipe_label_sheet(warehouse_path: Path, csv_path: Path, *, n_labels: int = 15_000, seed: int = 11) -> int:
    """The label sheet of recipe_category, with the same kinds of analyst errors as device_gender's
    (the misspelling here is "desert"; a conflicting row names another category)."""
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        truth = con.execute(f"SELECT recipe_id, category FROM {RECIPE_TRUTH_TABLE} ORDER BY recipe_id").fetchall()
    return _write_sheet(
        truth,
        warehouse_path,
        csv_path,
        n_labels=n_labels,
        seed=seed,
        header=RECIPE_LABEL_HEADER,
        typo="desert",
        other_label=lambda label, r: RECIPE_CLASSES[(RECIPE_CLASSES.index(label) + 1 + r % 4) % 5],
        what="recipes",
    )


def _write_sheet(
    truth: list[tuple[int, str]],
    warehouse_path: Path,
    csv_path: Path,
    *,
    n_labels: int,
    seed: int,
    header: tuple[str, ...],
    typo: str,
    other_label: Callable[[str, int], str],
    what: str,
) -> int:
    if not 20 <= n_labels <= len(truth):
        raise ValueError(
            f"{warehouse_path}: asked for {n_labels} labels; it holds {len(truth)} {what} "
            "(at least 20 labels are needed to place the analyst errors)"
        )
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(truth), n_labels, replace=False))
    rows = [
        [str(truth[i][0]), truth[i][1], _ANALYSTS[int(a)], "", ""]
        for i, a in zip(picked, rng.integers(0, len(_ANALYSTS), n_labels), strict=True)
    ]
    k = max(1, n_labels // 1000)
    order = iter(rng.permutation(n_labels).tolist())
    for _ in range(k):
        rows[next(order)][1] = typo
        rows[next(order)][1] = ""
        rows[next(order)][1] = "#N/A"
        rows[next(order)][0] += "\u00a0"
        r = rows[next(order)]
        r[0] = r[0].translate(_FULL_WIDTH)
        r = rows[next(order)]
        r[1] = r[1].capitalize()
        rows[next(order)][3] = "'; DROP TABLE ml_labels; --"
        rows[next(order)][3] = "unsure, check again"
    # Duplicates and conflicts copy untouched rows; each lands a little after its original.
    extra = []
    for _ in range(k):
        i = next(order)
        extra.append((i, list(rows[i])))
        j = next(order)
        extra.append((j, [rows[j][0], other_label(rows[j][1], j), _ANALYSTS[0], "second look", ""]))
    for i, row in sorted(extra, key=lambda e: e[0], reverse=True):
        rows.insert(min(len(rows), i + 1 + int(rng.integers(0, 50))), row)
    data_rows = len(rows)
    rows.insert(int(rng.integers(1, len(rows))), ["", "", "", "", ""])
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return data_rows


LABEL_SHEETS = {"device_gender": write_label_sheet, "recipe_category": write_recipe_label_sheet}


def write_label_sheet_for(model: str, warehouse_path: Path, csv_path: Path) -> int:
    """The demo's label sheet of an example model (the CSV standing in for its Google Sheet)."""
    if model not in LABEL_SHEETS:
        raise KeyError(f"the demo has no synthetic label sheet for {model!r}; known: {sorted(LABEL_SHEETS)}")
    return LABEL_SHEETS[model](warehouse_path, csv_path)


# --- late labels ---------------------------------------------------------------------------
# Analysts label some scored entities days after their predictions were published: those labels
# measure the model in production (mlbatch.stages.realized). The demo and its tests append them
# to the sheet from the same hidden truth.
LATE_ANALYST = "late"  # the labelled_by of late rows
LATE_TRUTH = {"device_gender": (TRUTH_TABLE, "device_id", "gender", ("female", "male"))}


def append_late_labels(
    model: str,
    warehouse_path: Path,
    csv_path: Path,
    keys: list[int],
    *,
    flip: Callable[[int], bool] | None = None,
) -> int:
    """Append the true label of each key in ``keys`` to the sheet (``labelled_by`` ``late``).

    ``flip(key)`` true: the other class instead (a segment whose labels disagree with the model
    on purpose, to show a degraded realized metric). Returns the rows appended.
    """
    if model not in LATE_TRUTH:
        raise KeyError(f"the demo has no synthetic truth for late labels of {model!r}; known: {sorted(LATE_TRUTH)}")
    table, key_col, label_col, (a, b) = LATE_TRUTH[model]
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        con.register("late_keys", pa.table({"k": pa.array(sorted(keys), pa.int64())}))
        truth = con.execute(
            f"SELECT t.{key_col}, t.{label_col} FROM {table} t JOIN late_keys ON t.{key_col} = late_keys.k "
            f"ORDER BY t.{key_col}"
        ).fetchall()
    rows = [
        [key, (b if label == a else a) if flip and flip(key) else label, LATE_ANALYST, "labelled after scoring", ""]
        for key, label in truth
    ]
    with open(csv_path, "a", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return len(rows)
