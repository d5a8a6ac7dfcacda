"""The per-row label validator, and the spec and the checker sharing one class normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlbatch.labels.check import check_labels
from mlbatch.labels.rows import RowRules, check_row
from mlbatch.spec import SpecError, load_spec
from mlbatch.spec.label_text import class_index

from tests.support.paths import REPO

CLASSES = ["male", "female"]
RULES = RowRules("animal_id", "sex", 0, 1, CLASSES, class_index(CLASSES), integer_keys=True)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (["#REF!", "male"], "cell_error"),
        (["7", "#n/a"], "cell_error"),
        (["", "male"], "missing_key"),
        (["7x", "male"], "invalid_key"),
        (["99999999999999999999", "male"], "invalid_key"),
        (["7", ""], "missing_label"),
        (["7", "mal"], "unknown_label"),
    ],
)
def test_one_row_one_reason(row: list[str], reason: str) -> None:
    key_text, key, cls, _raw, problem = check_row(row, RULES)
    assert problem is not None and problem[0] == reason and cls is None
    assert problem[2].startswith(f"{reason}: ")


def test_a_valid_row_gives_its_key_and_the_class_as_the_spec_spells_it() -> None:
    assert check_row([" 007 ", "\u200bMALE "], RULES) == ("007", 7, "male", "\u200bMALE ", None)
    assert check_row(["", "  ", ""], RULES) is None  # blank: skipped


def _spec_with_classes(tmp_path: Path, classes: list[str]) -> Path:
    raw = yaml.safe_load((REPO / "dags" / "specs" / "device_gender.yaml").read_text())
    raw["labels"]["classes"] = classes
    path = tmp_path / "device_gender.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def test_spec_and_checker_normalise_classes_alike(tmp_path: Path) -> None:
    # Full-width letters and a zero-width space: NFKC and format characters, not only case and
    # padding. The spec stores the normalised names; the checker maps sheet labels onto them.
    spec = load_spec(_spec_with_classes(tmp_path, ["ｆｅｍａｌｅ", "male\u200b"]))
    assert spec.labels.classes == ["female", "male"]
    report = check_labels(
        ["device_id", "gender"],
        [["1", "FEMALE"], ["2", "Ｍale"]],
        model="device_gender",
        key_column="device_id",
        label_column="gender",
        classes=spec.labels.classes,
    )
    assert report.labels == {1: "female", 2: "male"}


def test_spec_rejects_classes_the_checker_could_not_tell_apart(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="distinct ignoring case"):
        load_spec(_spec_with_classes(tmp_path, ["male", "ＭＡＬＥ"]))
