import pytest
from mlbatch.maths import gates


def test_gate_passes_and_summarises():
    summary = gates.evaluate("m.features", [gates.at_least("rows", 10, 5), gates.equal("dups", 0, 0)])
    assert summary["passed"] == 2


def test_gate_lists_every_failure_with_numbers():
    checks = [
        gates.at_least("rows", 900, 1000, "s3://b/manifest"),
        gates.at_most("null_fraction[age]", 0.12, 0.05),
        gates.equal("duplicate_keys", 0, 0),
    ]
    with pytest.raises(gates.GateFailed) as err:
        gates.evaluate("device_gender.features.train", checks)
    text = str(err.value)
    assert "gate device_gender.features.train blocked: 2 of 3 checks failed" in text
    assert "FAIL rows: observed 900, threshold >= 1,000 (s3://b/manifest)" in text
    assert "FAIL null_fraction[age]: observed 0.12, threshold <= 0.05" in text
    assert "duplicate_keys" not in text
    assert [c.name for c in err.value.checks if not c.ok] == ["rows", "null_fraction[age]"]


def test_gate_message_is_bounded():
    checks = [gates.at_most(f"null_fraction[c{i}]", 1.0, 0.1) for i in range(100)]
    with pytest.raises(gates.GateFailed) as err:
        gates.evaluate("wide", checks)
    assert "... and 80 more" in str(err.value)
    assert str(err.value).count("FAIL") == 20
