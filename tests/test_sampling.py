import numpy as np

from stformer._sampling import LengthGroupedSampler


def _batches(order, size):
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_every_index_once_in_batches_of_similar_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(200, 2049, 130)
    order = list(LengthGroupedSampler(lengths, batch_size=12, seed=3))
    assert sorted(order) == list(range(130))
    batches = _batches(order, 12)
    # one megabatch sorted and cut: batches do not overlap in length range
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:], strict=False))
    assert lengths[batches[0]].max() == lengths.max()  # the longest batch first
    assert len(batches[-1]) == 130 % 12  # the short batch last
    padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    assert padding < 0.1 * lengths.sum()


def test_batch_order_is_random_but_repeatable():
    lengths = np.arange(600)
    sampler = LengthGroupedSampler(lengths, batch_size=10, seed=1)
    first = list(sampler)
    assert list(LengthGroupedSampler(lengths, batch_size=10, seed=1)) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    maxima = [lengths[b].max() for b in _batches(first, 10)]
    assert maxima[0] == 599
    assert maxima[1:] != sorted(maxima[1:], reverse=True)  # not simply longest to shortest


def test_large_datasets_group_within_megabatches():
    lengths = np.random.default_rng(2).integers(1, 10_000, 5_000)
    order = np.array(list(LengthGroupedSampler(lengths, batch_size=8, seed=0)))
    ranges = [np.ptp(lengths[b]) for b in _batches(order, 8)]
    # within 400-example megabatches neighbours in length differ by ~25: a batch spans < 400
    assert np.median(ranges) < 400
    assert len(LengthGroupedSampler([], batch_size=8, seed=0)) == 0
    assert list(LengthGroupedSampler([], batch_size=8, seed=0)) == []
