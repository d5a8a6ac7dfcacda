"""The label checker called as the unit tests call it: a two-column sheet of animals and their
sex, a permissive invalid-row threshold unless a test sets one."""

from __future__ import annotations

from mlbatch.labels.check import CheckReport, check_labels

HEADER = ["animal_id", "sex"]
CLASSES = ["male", "female"]


def check(
    rows: list[list[str]],
    header: list[str] | None = None,
    *,
    key_type: str = "integer",
    max_invalid_fraction: float = 1.0,
) -> CheckReport:
    # A permissive threshold by default so row-level tests are not blocked; threshold tests set it.
    return check_labels(
        HEADER if header is None else header,
        rows,
        model="sexing",
        key_column="animal_id",
        label_column="sex",
        classes=CLASSES,
        key_type=key_type,
        max_invalid_fraction=max_invalid_fraction,
    )


def reasons(report: CheckReport) -> dict[int, str]:
    return {r.row: r.reason for r in report.rejected}
