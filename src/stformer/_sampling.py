"""Length-grouped training order shared by pretraining and classification; stratified subsamples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

MEGABATCH_BATCHES = 50


class LengthGroupedSampler(Sampler[int]):
    """Indices in batches of cells of similar length; the batches come in random order.

    Each epoch, the examples are shuffled, cut into megabatches of ``50 * batch_size`` (the whole
    dataset when smaller), each megabatch sorted by length and cut into batches; the full batches
    are then shuffled, the longest goes first (memory errors show at once) and a short last batch
    stays last, so that the data loader's batches are exactly these. The order depends only on
    ``(seed, epoch)``: a resumed run repeats it. Unlike ``transformers``' sampler, small datasets
    are grouped too (it uses four megabatches at least, i.e. no grouping below 4 batches).

    >>> order = list(LengthGroupedSampler([5, 900, 7, 880], batch_size=2, seed=0))
    >>> sorted(order[:2]), sorted(order[2:])  # the long pair first
    ([1, 3], [0, 2])
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer at the start of each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        if len(self.lengths) == 0:
            return iter([])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        size = MEGABATCH_BATCHES * self.batch_size
        batches = []
        for start in range(0, len(order), size):
            mega = order[start : start + size]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        short = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if batches:
            longest = int(np.argmax([self.lengths[b].max() for b in batches]))
            batches[0], batches[longest] = batches[longest], batches[0]
        return iter(np.concatenate(batches + short).tolist())


def stratified_subsample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about ``n`` of ``labels``, each class in proportion (at least one cell each)."""
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(members, max(1, round(len(members) * n / len(labels))), replace=False)
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(chosen))
