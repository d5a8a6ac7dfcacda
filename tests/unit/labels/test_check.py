"""Unit tests of the label checker over a whole sheet: conflicts, blank and short rows, columns,
the invalid-row threshold, the verdicts, the CSV reader (no database, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlbatch.labels.check import LabelFileError, check_labels, content_hash, read_csv

from tests.support.label_check import HEADER, check, reasons


def test_conflict_rejects_every_row_of_the_key() -> None:
    rows = [["1234", "male"], ["5", "male"], ["1234", "male"], ["01234", "female"], ["6", "female"]]
    report = check(rows)
    assert reasons(report) == {2: "conflict", 4: "conflict", 5: "conflict"}
    assert {r.key for r in report.rejected} == {"1234", "01234"}
    assert report.labels == {5: "male", 6: "female"}
    assert report.accepted == 2
    assert report.verdicts[2] == 'conflict: 1234 is also labelled "female" on row 5'
    assert report.verdicts[5] == 'conflict: 1234 is also labelled "male" on rows 2, 4'


def test_rows_rejected_for_another_reason_do_not_take_part_in_conflicts() -> None:
    report = check([["7", "male"], ["7", "mael"], ["7", ""]])
    assert reasons(report) == {3: "unknown_label", 4: "missing_label"}
    assert report.labels == {7: "male"}


def test_duplicate_same_label_accepted_once() -> None:
    report = check([["42", "male"], ["42", "MALE "], ["43", "female"]])
    assert report.rejected == []
    assert report.rows == 3
    assert report.accepted == 2
    assert report.labels == {42: "male", 43: "female"}
    assert report.verdicts == {2: "ok", 3: "ok", 4: "ok"}


# --- rows and header ---------------------------------------------------------------------------


def test_blank_rows_skipped_but_row_numbers_kept() -> None:
    rows = [["1", "male"], [], ["", " ", "\u200b"], ["\u3000", ""], ["2", "mael"]]
    report = check(rows)
    assert report.rows == 2
    assert reasons(report) == {6: "unknown_label"}
    assert set(report.verdicts) == {2, 6}


def test_short_rows_mean_empty_cells() -> None:
    report = check([["1"], ["2", "male"]], header=["notes", "sex", "animal_id"])
    # header order is notes, sex, animal_id: row 2 has only "notes"; row 3 has notes and sex.
    assert reasons(report) == {2: "missing_key", 3: "missing_key"}


def test_extra_and_reordered_columns() -> None:
    header = ["notes", "Sex", "batch", "Animal_ID"]
    rows = [["n", "female", "b1", "10"], ["n", "male", "b1", "11", "extra cell"]]
    report = check(rows, header=header)
    assert report.labels == {10: "female", 11: "male"}


def test_header_case_and_space_differences() -> None:
    header = ["\ufeff  ANIMAL_ID\u00a0", "\u3000Sex\u200b"]
    report = check([["1", "male"]], header=header)
    assert report.labels == {1: "male"}
    assert not report.blocked


def test_missing_column_blocked_and_named() -> None:
    report = check([["1", "male"]], header=["id", "sex", "notes"])
    assert report.blocked
    assert report.accepted == 0 and report.labels == {}
    assert '"animal_id"' in report.message
    assert '"id", "sex", "notes"' in report.message
    assert report.message.startswith("blocked: missing column ")


def test_both_columns_missing_are_named() -> None:
    report = check([], header=["a"])
    assert report.blocked
    assert 'missing columns "animal_id", "sex"' in report.message


def test_duplicate_required_column_blocked() -> None:
    report = check([["1", "male", "female"]], header=["animal_id", "sex", "SEX"])
    assert report.blocked
    assert "appears more than once" in report.message and "B, C" in report.message


def test_empty_sheet_blocked() -> None:
    report = check([])
    assert report.blocked
    assert report.message == "blocked: no data rows"
    only_blank = check([[""], ["", "  "]])
    assert only_blank.blocked and only_blank.rows == 0


def test_empty_file_blocks_on_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    header, rows = read_csv(path)
    assert (header, rows) == ([], [])
    report = check(rows, header=header)
    assert report.blocked
    assert "found columns: none" in report.message


# --- threshold ---------------------------------------------------------------------------------


def _sheet(n: int, bad: int) -> list[list[str]]:
    return [[str(i), "mael" if i < bad else "male"] for i in range(n)]


def test_exactly_at_threshold_not_blocked() -> None:
    report = check(_sheet(1000, 20), max_invalid_fraction=0.02)
    assert not report.blocked
    assert report.message == "ok: 1,000 rows, 980 labels accepted, 20 rejected (2.0%)"
    assert report.accepted == 980


@pytest.mark.parametrize("n, bad, limit", [(100, 3, 0.03), (70, 7, 0.1), (3, 1, 1 / 3)])
def test_exactly_at_threshold_survives_float_rounding(n: int, bad: int, limit: float) -> None:
    assert not check(_sheet(n, bad), max_invalid_fraction=limit).blocked


def test_just_above_threshold_blocked() -> None:
    report = check(_sheet(1000, 21), max_invalid_fraction=0.02)
    assert report.blocked
    assert report.message == "blocked: 21 of 1,000 rows rejected (2.1%) exceeds max_invalid_fraction 2.0%"
    assert report.labels == {} and report.accepted == 0
    assert len(report.verdicts) == 1000  # the analyst still gets every row's verdict


def test_blocked_message_example() -> None:
    report = check(_sheet(1000, 31), max_invalid_fraction=0.02)
    assert report.message == "blocked: 31 of 1,000 rows rejected (3.1%) exceeds max_invalid_fraction 2.0%"


def test_zero_threshold() -> None:
    assert not check(_sheet(10, 0), max_invalid_fraction=0).blocked
    assert check(_sheet(10, 1), max_invalid_fraction=0).blocked


# --- report shape ------------------------------------------------------------------------------


def test_to_contract_exact_keys_and_sorted_rejections() -> None:
    report = check([["5", "male"], ["", "male"], ["5", "female"], ["x", "male"]])
    contract = report.to_contract()
    assert list(contract) == ["model", "rows", "accepted", "rejected", "blocked", "message"]
    assert contract["rejected"] == [
        {"row": 2, "key": "5", "reason": "conflict"},
        {"row": 3, "key": "", "reason": "missing_key"},
        {"row": 4, "key": "5", "reason": "conflict"},
        {"row": 5, "key": "x", "reason": "invalid_key"},
    ]
    assert contract["model"] == "sexing" and contract["rows"] == 4 and contract["accepted"] == 0
    # The pydantic JSON matches the contract: raw values, labels and verdicts stay out.
    assert report.model_dump(mode="json") == contract


def test_verdicts_for_every_non_blank_row() -> None:
    rows = [
        ["1", "male"],
        [],
        ["1", "Male"],
        ["2", "mael"],
        ["", "male"],
        ["#REF!", "x"],
        ["3", ""],
        ["4x", "male"],
    ]
    report = check(rows, header=HEADER)
    assert report.verdicts == {
        2: "ok",
        4: "ok",
        5: 'unknown_label: "mael" is not one of "male", "female"',
        6: 'missing_key: the "animal_id" cell is empty',
        7: 'cell_error: the key cell shows "#REF!"',
        8: 'missing_label: the "sex" cell is empty',
        9: "invalid_key: \"4x\" is not a whole number (digits only, optionally a leading '-')",
    }


def test_verdict_shows_invisible_characters() -> None:
    report = check([["1", "ma\u00a0le"]])
    assert report.verdicts[2] == 'unknown_label: "ma\\u00a0le" is not one of "male", "female"'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_type": "uuid"},
        {"max_invalid_fraction": 1.5},
        {"classes": []},
        {"classes": ["a", "A"]},
        {"classes": ["a", " "]},
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"model": "m", "key_column": "k", "label_column": "l", "classes": ["a"]}
    args.update(kwargs)
    with pytest.raises(ValueError):
        check_labels(["k", "l"], [], **args)  # type: ignore[arg-type]


# --- CSV files and hashing ---------------------------------------------------------------------

CSV_TEXT = 'animal_id,sex,notes\n1,male,"two\nlines, and a comma"\n\n2,Female,\n'


def test_read_csv_bom_and_crlf(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_bytes(CSV_TEXT.encode())
    bom_crlf = tmp_path / "bom_crlf.csv"
    bom_crlf.write_bytes(b"\xef\xbb\xbf" + CSV_TEXT.replace("\n", "\r\n").encode())

    header, rows = read_csv(bom_crlf)
    assert header == ["animal_id", "sex", "notes"]  # BOM not glued to the first column name
    assert rows[0][:2] == ["1", "male"]
    assert rows[0][2] in ("two\r\nlines, and a comma", "two\nlines, and a comma")
    assert rows[1] == []  # the blank line keeps its row number
    report = check(rows, header=header)
    assert report.labels == {1: "male", 2: "female"}
    assert set(report.verdicts) == {2, 4}

    assert read_csv(plain)[0] == header
    assert content_hash(*read_csv(plain)) == content_hash(*read_csv(bom_crlf))


def test_content_hash_stable_and_sensitive() -> None:
    base = content_hash(["animal_id", "sex"], [["1", "male"], ["2", "female"]])
    assert base == content_hash(["\ufeffanimal_id", "sex "], [["1", "male", ""], ["\u00a02", "female"], [], [""]])
    assert base != content_hash(["animal_id", "sex"], [["1", "female"], ["2", "female"]])
    assert base != content_hash(["animal_id", "sex"], [["1", "male"], [], ["2", "female"]])  # rows moved
    assert len(base) == 64 and int(base, 16) >= 0


def test_invalid_utf8_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("animal_id,sex\n1,male\n2,m\u00e4le\n".encode("latin-1"))
    with pytest.raises(LabelFileError) as info:
        read_csv(path)
    message = str(info.value)
    assert str(path) in message
    assert "byte 24" in message and "line 3" in message
    assert isinstance(info.value, ValueError)


# --- at sheet scale ----------------------------------------------------------------------------


def test_a_sheet_of_200k_rows_with_a_few_non_ascii_cells() -> None:
    """The fast path (vectorised) and the slow one (non-ASCII cells) agree at sheet scale; how
    fast it is lives in benchmarks/bench_labels.py, not here."""
    rows = [[str(i), "male" if i % 3 else "Female", "note"] for i in range(200_000)]
    rows[10] = ["\uff11\uff10", "\u00a0male\u200b", "n"]  # a few non-ASCII cells on the slow path
    rows[11] = ["10", "female"]
    report = check(rows, header=[*HEADER, "notes"], max_invalid_fraction=0.02)
    assert report.rows == 200_000
    assert reasons(report) == {12: "conflict", 13: "conflict"}
    assert report.accepted == 199_998
