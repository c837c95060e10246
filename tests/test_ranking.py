import numpy as np
import scipy.sparse as sp

from stformer.tokenize.ranking import concat_ragged, normalize, rank_value_encode


def _ragged_to_lists(tokens, lengths):
    return [t.tolist() for t in np.split(tokens, np.cumsum(lengths)[:-1])]


def test_zeros_excluded_and_descending_order():
    values = sp.csr_matrix(np.array([[0.0, 3.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]]))
    tokens, lengths = rank_value_encode(values, np.array([10, 11, 12, 13]), 2048)
    assert _ragged_to_lists(tokens, lengths) == [[11, 13], [10]]


def test_ties_go_to_lower_token_id_whatever_the_column_order():
    values = sp.csr_matrix(np.array([[1.0, 1.0, 1.0, 2.0]]))
    tokens, _ = rank_value_encode(values, np.array([9, 4, 7, 5]), 10)
    assert tokens.tolist() == [5, 4, 7, 9]


def test_truncation_keeps_the_highest_values():
    values = sp.csr_matrix(np.arange(1.0, 11.0)[None, :])
    tokens, lengths = rank_value_encode(values, np.arange(10), 3)
    assert tokens.tolist() == [9, 8, 7] and lengths.tolist() == [3]


def test_per_row_caps_and_many_blocks():
    rng = np.random.default_rng(0)
    dense = rng.random((1200, 30)) * (rng.random((1200, 30)) < 0.5)
    caps = rng.integers(1, 20, 1200)
    tokens, lengths = rank_value_encode(sp.csr_matrix(dense), np.arange(30), caps)
    expected = [
        sorted(np.flatnonzero(row), key=lambda j: -row[j])[:cap] for row, cap in zip(dense, caps, strict=True)
    ]
    assert _ragged_to_lists(tokens, lengths) == [list(map(int, e)) for e in expected]


def test_median_normalization_changes_the_order():
    counts = sp.csr_matrix(np.array([[10.0, 2.0]]))
    # gene 0 is usually high (median 100), gene 1 usually low (median 1): gene 1 ranks first
    weights = sp.csr_matrix(np.diag([10_000 / 100, 10_000 / 1]))
    values = normalize(counts, np.array([12.0]), weights)
    np.testing.assert_allclose(values.toarray(), [[10 / 12 * 100, 2 / 12 * 10_000]])
    tokens, _ = rank_value_encode(values, np.array([2, 3]), 5)
    assert tokens.tolist() == [3, 2]


def test_concat_ragged():
    a = (np.array([1, 2, 3]), np.array([2, 0, 1]))
    b = (np.array([7, 8, 9]), np.array([1, 2, 0]))
    tokens, lengths = concat_ragged(a, b)
    assert _ragged_to_lists(tokens, lengths) == [[1, 2, 7], [8, 9], [3]]
