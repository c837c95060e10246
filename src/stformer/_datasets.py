"""Facts about token datasets, read from Arrow without decoding examples."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from ._constants import INPUT_IDS


def token_id_range(dataset) -> tuple[int, int] | None:
    """(lowest, highest) token id over all examples (selections honoured), or None if all empty."""
    low = high = None
    for batch in dataset.with_format("arrow").iter(batch_size=10_000):
        bounds = pc.min_max(pc.list_flatten(batch[INPUT_IDS])).as_py()
        if bounds["min"] is not None:
            low = bounds["min"] if low is None else min(low, bounds["min"])
            high = bounds["max"] if high is None else max(high, bounds["max"])
    return None if high is None else (low, high)


def example_lengths(dataset) -> np.ndarray:
    """Number of tokens of each example (selections honoured), shape (n,)."""
    parts = [
        pc.list_value_length(batch[INPUT_IDS]).to_numpy(zero_copy_only=False)
        for batch in dataset.with_format("arrow").iter(batch_size=10_000)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
