"""Token datasets: facts read from Arrow without decoding examples, and padding of a batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import torch

from ._constants import INPUT_IDS
from ._errors import InputKeyError


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


def string_column(dataset, name: str) -> pd.api.extensions.ExtensionArray:
    """A string column (n,) backed by the dataset's Arrow memory (selections honoured): no Python strings.

    Indexes like a NumPy array (``ids[rows]``); ``np.asarray`` of a part gives its strings.
    """
    return pd.array(dataset.with_format("arrow")[name], dtype="string[pyarrow]")


def pad_right(
    sequences: Sequence[Sequence[int]], pad_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right to ``width`` (default: the longest), and their attention mask.

    Returns ``(input_ids, attention_mask)``, both (batch, width) int64; longer sequences are cut.

    >>> pad_right([[5, 6, 7], [8]], 0)  # doctest: +SKIP
    (tensor([[5, 6, 7], [8, 0, 0]]), tensor([[1, 1, 1], [1, 0, 0]]))
    """
    width = max((len(s) for s in sequences), default=0) if width is None else width
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = min(len(seq), width)
        ids[row, :n] = torch.as_tensor(seq[:n], dtype=torch.long)
        mask[row, :n] = 1
    return ids, mask


def column_values(data, key: str) -> np.ndarray:
    """The values of column ``key`` as an object array; a missing column is named with the columns there are."""
    if key not in data.column_names:
        msg = f"dataset has no column {key!r} (columns: {data.column_names})"
        raise InputKeyError(msg)
    return np.asarray(data[key], dtype=object)


def matching_rows(data, filter_data: dict) -> np.ndarray:
    """Indices (sorted) of the examples whose columns hold an allowed value of ``filter_data``.

    ``filter_data`` maps a column to an allowed value or list of values; values compare as text,
    so ``1`` and ``"1"`` (as a command line gives it) match alike.
    """
    keep = np.ones(len(data), dtype=bool)
    for key, allowed in filter_data.items():
        allowed = list(allowed) if isinstance(allowed, (list, tuple, set)) else [allowed]
        keep &= np.isin(column_values(data, key).astype(str), np.asarray(allowed, dtype=object).astype(str))
    return np.flatnonzero(keep)
