"""The GPU pool's size follows the largest GPU job, training or scoring."""

import pytest
from mlbatch.pools import SLOTS_ENV, gpu_pool_slots

from tests.support.specs import write_spec


def test_pool_size_is_the_largest_gpu_job_of_train_or_score(tmp_path, monkeypatch):
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    write_spec(tmp_path, lambda r: (r["train"].update(resources={"gpu": 1}), r["score"].update(resources={"gpu": 2})))
    assert gpu_pool_slots(tmp_path) == 2
    monkeypatch.setenv(SLOTS_ENV, "1")
    with pytest.raises(ValueError, match="below the largest GPU job \\(2 GPUs"):
        gpu_pool_slots(tmp_path)


def test_cpu_only_specs_still_get_a_one_slot_pool(tmp_path, monkeypatch):
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    write_spec(tmp_path, lambda r: r["train"].update(resources={"gpu": 0}))
    assert gpu_pool_slots(tmp_path) == 1
