"""Unit tests of the label checker's keys and labels, row by row: normalisation, reason codes
and their precedence, sheet error values, integer and string keys (no database, no network)."""

from __future__ import annotations

import pytest
from mlbatch.labels.check import check_labels, normalize

from tests.support.label_check import HEADER, check, reasons

# --- normalization -----------------------------------------------------------------------------


def test_full_width_digits_become_integer_key() -> None:
    report = check([["１２３", "male"]])
    assert report.labels == {123: "male"}
    assert report.rejected == []


def test_leading_zeros_are_canonicalized() -> None:
    report = check([["007", "female"]])
    assert report.labels == {7: "female"}


@pytest.mark.parametrize(
    "key, label",
    [
        ("\u00a0123\u00a0", "\u00a0male\u00a0"),  # NBSP
        ("\u3000123\u3000", "\u3000male\u3000"),  # ideographic space
        ("\u200b123\ufeff", "\u2060male\u200d"),  # zero-width around
        ("1\u200b23", "ma\u200cle"),  # zero-width inside
        (" \t123 \u200b ", "\u200b MALE \u200b"),  # mixed, and case
    ],
)
def test_invisible_and_unicode_spaces_are_removed(key: str, label: str) -> None:
    report = check([[key, label]])
    assert report.labels == {123: "male"}
    assert report.verdicts == {2: "ok"}


def test_space_inside_integer_key_is_invalid() -> None:
    # NBSP inside is not invisible: NFKC makes it a space and "12 3" is not a number.
    report = check([["12\u00a03", "male"]])
    assert reasons(report) == {2: "invalid_key"}


def test_labels_match_case_insensitively_and_take_class_spelling() -> None:
    report = check_labels(
        ["id", "label"],
        [["1", "MALE"], ["2", "fEmAlE"], ["3", "Other"]],
        model="m",
        key_column="id",
        label_column="label",
        classes=["male", "female", "Other"],
        max_invalid_fraction=0,
    )
    assert report.labels == {1: "male", 2: "female", 3: "Other"}


def test_normalize_helper() -> None:
    assert normalize("\ufeff\u3000ａｂｃ\u200b\u00a0") == "abc"


# --- reason codes ------------------------------------------------------------------------------


def test_every_reason_code_in_order() -> None:
    rows = [
        ["1", "male"],  # row 2 ok
        ["#REF!", "male"],  # row 3
        ["2", "#n/a"],  # row 4: error cells compared upper-cased
        ["", "male"],  # row 5
        ["12a", "male"],  # row 6
        ["3", ""],  # row 7
        ["4", "mael"],  # row 8
        ["5", "male"],  # row 9
        ["5", "female"],  # row 10
    ]
    report = check(rows)
    assert reasons(report) == {
        3: "cell_error",
        4: "cell_error",
        5: "missing_key",
        6: "invalid_key",
        7: "missing_label",
        8: "unknown_label",
        9: "conflict",
        10: "conflict",
    }
    assert report.labels == {1: "male"}
    assert report.accepted == 1
    assert report.rows == 9


def test_reason_precedence() -> None:
    rows = [
        ["#VALUE!", ""],  # cell_error beats missing_label
        ["", "#DIV/0!"],  # cell_error beats missing_key
        ["", ""],  # blank row: skipped, not missing_key
        ["", "", "a note"],  # not blank: missing_key beats missing_label
        ["x", ""],  # invalid_key beats missing_label
        ["9", ""],  # missing_label
    ]
    report = check(rows, header=[*HEADER, "notes"])
    assert reasons(report) == {
        2: "cell_error",
        3: "cell_error",
        5: "missing_key",
        6: "invalid_key",
        7: "missing_label",
    }
    assert report.rows == 5


@pytest.mark.parametrize(
    "error",
    [
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
        " #ref! ",
    ],
)
def test_sheet_error_values(error: str) -> None:
    report = check([[error, "male"], ["1", error]])
    assert reasons(report) == {2: "cell_error", 3: "cell_error"}


@pytest.mark.parametrize(
    "key",
    [
        "1.0",
        "1e3",
        "12a",
        "+5",
        "1,234",
        "0x10",
        "٣",
        "9223372036854775808",
        "-9223372036854775809",
        "12345678901234567890",
    ],
)
def test_invalid_integer_keys(key: str) -> None:
    report = check([[key, "male"]])
    assert reasons(report) == {2: "invalid_key"}
    assert report.rejected[0].key == normalize(key)
    assert report.labels == {}


@pytest.mark.parametrize(
    "key, expected",
    [
        ("-5", -5),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("0000000000000000000000042", 42),
        ("-0", 0),
    ],
)
def test_valid_integer_keys(key: str, expected: int) -> None:
    assert check([[key, "male"]]).labels == {expected: "male"}


def test_string_keys() -> None:
    rows = [
        ["AB-12", "male"],
        ["x" * 256, "male"],
        ["a\tb", "male"],
        ["x" * 255, "female"],
        ["ab-12", "female"],
    ]
    report = check(rows, key_type="string")
    assert reasons(report) == {3: "invalid_key", 4: "invalid_key"}
    # String keys stay case-sensitive: "AB-12" and "ab-12" are different animals.
    assert report.labels == {"AB-12": "male", "x" * 255: "female", "ab-12": "female"}
    assert check([["007", "male"]], key_type="string").labels == {"007": "male"}  # text, not 7


def test_sql_injection_text_is_just_rejected() -> None:
    evil = "1; DROP TABLE ml_labels;--"
    report = check([["1", evil], [evil, "male"]])
    assert reasons(report) == {2: "unknown_label", 3: "invalid_key"}
    assert report.rejected[0].value == evil
    assert report.labels == {}
    string_keyed = check([[evil, "male"]], key_type="string")
    assert string_keyed.labels == {evil: "male"}  # a legal string key: stored as data, never run


# --- conflicts and duplicates ------------------------------------------------------------------
