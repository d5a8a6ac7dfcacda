"""One label-sheet row in, its verdict out: the per-row half of the label checker.

:func:`check_row` knows nothing of other rows (conflicts between rows of one key are the
driver's, :func:`mlbatch.labels.check.check_labels`). Cell text is only ever compared and parsed
as an integer, never executed or interpolated.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from mlbatch.spec.label_text import normalize, quote

Reason = Literal["cell_error", "missing_key", "invalid_key", "missing_label", "unknown_label", "conflict"]

# What Google Sheets / Excel put in a cell (and in its CSV export) when a formula fails.
SHEET_ERRORS = frozenset(
    {
        "#REF!",
        "#N/A",
        "#VALUE!",
        "#DIV/0!",
        "#NAME?",
        "#NUM!",
        "#NULL!",
        "#ERROR!",
        "#SPILL!",
        "#CALC!",
        "#GETTING_DATA",
    }
)

MAX_STRING_KEY = 255
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# ASCII digits only: NFKC has already folded full-width digits, and other scripts' digits
# (which str.isdigit and int() would accept) are not what the warehouse key holds.
_INT_KEY = re.compile(r"-?[0-9]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class RowRules:
    """What every row is checked against: where the two cells are, and what they may hold."""

    key_column: str
    label_column: str
    key_index: int
    label_index: int
    classes: list[str]
    class_by_fold: dict[str, str]  # from mlbatch.spec.label_text.class_index, as the spec validates
    integer_keys: bool


Problem = tuple[Reason, str, str]  # (reason, the raw cell it is about, the verdict for the sheet)


# A non-blank row's outcome: (the normalised key cell as shown back, the parsed key, the class,
# the raw label cell, the problem that rejects the row or None). A plain tuple on purpose: one is
# built per row of sheets of 10^5 rows, and a tuple is the cheapest object Python builds (a
# NamedTuple or dataclass made the 200k-row check twice as slow).
RowVerdict = tuple[str, int | str | None, str | None, str, Problem | None]


def is_blank(row: list[str]) -> bool:
    return all(not normalize(cell) for cell in row)


def check_row(row: list[str], rules: RowRules) -> RowVerdict | None:
    """The verdict on one sheet row; ``None`` for a blank row (skipped, not counted).

    The order of the checks is the analyst's: a sheet error in either cell, then the key
    (missing, invalid), then the label (missing, unknown). Kept flat: it runs once per row.
    """
    n = len(row)
    raw_key = row[rules.key_index] if rules.key_index < n else ""
    raw_label = row[rules.label_index] if rules.label_index < n else ""
    key_text, label_text = normalize(raw_key), normalize(raw_label)
    if not key_text and not label_text and is_blank(row):
        return None
    if key_text[:1] == "#" and key_text.upper() in SHEET_ERRORS:
        return (key_text, None, None, raw_label, _cell_error("key", raw_key))
    if label_text[:1] == "#" and label_text.upper() in SHEET_ERRORS:
        return (key_text, None, None, raw_label, _cell_error("label", raw_label))
    if not key_text:
        problem: Problem = ("missing_key", raw_key, f"missing_key: the {quote(rules.key_column)} cell is empty")
        return (key_text, None, None, raw_label, problem)
    key, why = _parse_integer(key_text) if rules.integer_keys else _parse_string(key_text)
    if key is None:
        return (key_text, None, None, raw_label, ("invalid_key", raw_key, f"invalid_key: {quote(raw_key)} {why}"))
    cls = rules.class_by_fold.get(label_text.casefold())
    if cls is None:
        return (key_text, key, None, raw_label, _label_problem(raw_label, label_text, rules))
    return (key_text, key, cls, raw_label, None)


def _cell_error(which: str, raw: str) -> Problem:
    return "cell_error", raw, f"cell_error: the {which} cell shows {quote(raw)}"


def _label_problem(raw_label: str, label_text: str, rules: RowRules) -> Problem:
    if not label_text:
        return "missing_label", raw_label, f"missing_label: the {quote(rules.label_column)} cell is empty"
    shown = ", ".join(map(quote, rules.classes))
    return "unknown_label", raw_label, f"unknown_label: {quote(raw_label)} is not one of {shown}"


def _parse_integer(text: str) -> tuple[int | None, str]:
    if len(text) <= 18 and text.isascii() and text.isdigit():  # common case; 18 digits fit in int64
        return int(text), ""
    if not _INT_KEY.fullmatch(text):
        return None, "is not a whole number (digits only, optionally a leading '-')"
    # Checked before int(): a very long digit string is both out of range and slow to convert.
    if len(text.lstrip("-").lstrip("0")) > 19:
        return None, "is out of range for a 64-bit integer key"
    value = int(text)  # leading zeros are fine: "007" is key 7
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None, "is out of range for a 64-bit integer key"
    return value, ""


def _parse_string(text: str) -> tuple[str | None, str]:
    if len(text) > MAX_STRING_KEY:
        return None, f"is longer than {MAX_STRING_KEY} characters ({len(text)})"
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return None, "contains control characters (a line break or tab inside the cell?)"
    return text, ""
