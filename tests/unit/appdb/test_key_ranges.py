"""The publish path's external sort: sampled split keys, rows spilled per key range, sorted per range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from mlbatch.backends.appdb.key_ranges import piece_count, spill_by_range, split_keys
from mlbatch.maths import key_sample


def _batches(keys: list, size: int) -> list[pa.RecordBatch]:
    table = pa.table({"entity_key": keys, "score": np.arange(len(keys), dtype=np.float64)})
    return table.to_batches(max_chunksize=size)


def _sorted_day(batches: list[pa.RecordBatch], pieces: int, sessions: int, folder: Path):
    rows = sum(b.num_rows for b in batches)
    splits = split_keys((b.column("entity_key") for b in batches), rows, pieces)
    return splits, spill_by_range(iter(batches), splits, sessions, folder, batch_rows=700)


def test_piece_count_is_a_multiple_of_the_sessions_and_bounds_the_piece_size() -> None:
    assert piece_count(0, 2, piece_rows=1_000_000) == 2
    assert piece_count(1_000_000, 2, piece_rows=1_000_000) == 2
    assert piece_count(2_500_000, 2, piece_rows=1_000_000) == 4  # 3 pieces of <= 1M, rounded up for 2 sessions
    assert piece_count(10_000_000, 2, piece_rows=1_000_000) == 10
    assert piece_count(10_000_000, 1, piece_rows=3_000_000) == 4


def test_integer_keys_come_back_sorted_and_split_into_disjoint_session_ranges(tmp_path: Path) -> None:
    n = 20_000
    keys = ((np.arange(n, dtype=np.int64) * 2_654_435_761) % 1_000_003).tolist()  # scrambled, unique
    batches = _batches(keys, 1234)
    splits, sessions = _sorted_day(batches, pieces=8, sessions=2, folder=tmp_path)
    assert len(splits) == 7 and splits == sorted(splits)
    assert len(sessions) == 2
    assert sessions[0].key_from is None and sessions[-1].key_to is None
    assert sessions[0].key_to == sessions[1].key_from == splits[3]
    seen = []
    for share in sessions:
        got = [k for b in share.batches() for k in b.column("entity_key").to_pylist()]
        assert max(len(b) for b in share.batches()) <= 700
        assert got == sorted(got)
        assert all(
            (share.key_from is None or k >= share.key_from) and (share.key_to is None or k < share.key_to) for k in got
        )
        assert len(got) == pytest.approx(n / 2, rel=0.1)  # sampled splits: about equal halves
        seen += got
    assert seen == sorted(keys)
    # The other columns travel with their key.
    position = {k: float(i) for i, k in enumerate(keys)}
    pairs = [
        p for b in sessions[1].batches() for p in zip(b["entity_key"].to_pylist(), b["score"].to_pylist(), strict=True)
    ]
    assert len(pairs) > n / 3 and all(score == position[k] for k, score in pairs)


def test_string_keys_sort_in_arrow_byte_order(tmp_path: Path) -> None:
    keys = ["b", "a", "é", "Z", "漢字", "", "a\tb", "🙂", "ab", "B"] * 1 + [f"k{i:05d}" for i in range(3000)]
    _, sessions = _sorted_day(_batches(keys, 500), pieces=4, sessions=1, folder=tmp_path)
    assert len(sessions) == 1
    got = [k for b in sessions[0].batches() for k in b.column("entity_key").to_pylist()]
    assert got == pa.array(keys).take(pa.compute.sort_indices(pa.array(keys))).to_pylist()


def test_sample_stays_bounded_and_an_empty_day_streams_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(key_sample, "SAMPLE_KEYS", 100)
    keys = list(range(50_000))
    splits = split_keys((b.column("entity_key") for b in _batches(keys, 5000)), 50_000, 4)
    assert len(splits) == 3 and all(0 < s < 50_000 for s in splits)
    assert split_keys(iter([]), 0, 4) == []
    sessions = spill_by_range(iter([]), [], 2, tmp_path)
    assert [list(s.batches()) for s in sessions] == [[]]
