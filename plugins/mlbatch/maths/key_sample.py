"""A uniform sample of a day's keys, drawn as the day streams past, in bounded memory.

The MySQL publisher cuts the day into key ranges of about equal size from such a sample
(:mod:`mlbatch.backends.appdb.key_ranges`). The prediction gate draws it in its one pass over the
day and keeps it beside the run's state, so the publish does not read the keys again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SAMPLE_KEYS = 200_000  # the sample's expected size: split keys to within about 0.2% of a range
SEED = 7


class KeySampler:
    """Keeps each key with probability ``SAMPLE_KEYS / rows`` (``rows``: the day's expected count),
    so what is held is the sample (about ``SAMPLE_KEYS`` keys), never the day."""

    def __init__(self, rows: int, *, seed: int = SEED):
        self.keep = min(1.0, SAMPLE_KEYS / rows) if rows > 0 else 1.0
        self.rng = np.random.default_rng(seed)
        self.parts: list[pa.Array] = []

    def update(self, keys: pa.Array | pa.ChunkedArray) -> None:
        arr = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
        self.parts.append(arr if self.keep >= 1.0 else arr.filter(pa.array(self.rng.random(len(arr)) < self.keep)))

    def sample(self) -> pa.Array | None:
        """The sampled keys, in the order they went past (:func:`cut_points` sorts them); None when
        no key went past."""
        return pa.concat_arrays(self.parts) if self.parts else None


def sample_keys(keys: Iterable[pa.Array], rows: int) -> pa.Array | None:
    """One pass over every key (``rows`` of them): their sample."""
    sampler = KeySampler(rows)
    for arr in keys:
        sampler.update(arr)
    return sampler.sample()


def cut_points(sample: pa.Array | None, pieces: int) -> list[Any]:
    """``pieces - 1`` increasing keys that cut the sampled key set into ranges of about equal size."""
    if pieces <= 1 or sample is None or len(sample) == 0:
        return []
    ordered = sample.take(pc.sort_indices(sample))
    cuts = [ordered[min(len(ordered) - 1, len(ordered) * i // pieces)].as_py() for i in range(1, pieces)]
    return sorted(set(cuts))
