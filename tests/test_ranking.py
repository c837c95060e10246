import numpy as np
import pytest
import scipy.sparse as sp

from stformer.tokenize._genes import ColumnMap
from stformer.tokenize.ranking import concat_ragged, rank_value_encode, scale_rows


def _ragged_to_lists(tokens, lengths):
    return [t.tolist() for t in np.split(tokens, np.cumsum(lengths)[:-1])]


def test_zeros_excluded_and_descending_order():
    values = sp.csr_matrix(np.array([[0.0, 3.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]]))
    tokens, lengths = rank_value_encode(values, 2048)
    assert _ragged_to_lists(tokens, lengths) == [[1, 3], [0]]


def test_ties_go_to_lower_token_id_whatever_the_storage_order():
    # column indices are token ids, deliberately stored unsorted
    values = sp.csr_matrix((np.array([1.0, 1.0, 1.0, 2.0]), np.array([9, 4, 7, 5]), [0, 4]), shape=(1, 10))
    tokens, _ = rank_value_encode(values, 10)
    assert tokens.tolist() == [5, 4, 7, 9]


def test_truncation_keeps_the_highest_values():
    values = sp.csr_matrix(np.arange(1.0, 11.0)[None, :])
    tokens, lengths = rank_value_encode(values, 3)
    assert tokens.tolist() == [9, 8, 7] and lengths.tolist() == [3]


def test_per_row_caps_and_many_blocks():
    rng = np.random.default_rng(0)
    dense = rng.random((1200, 30)) * (rng.random((1200, 30)) < 0.5)
    caps = rng.integers(1, 20, 1200)
    tokens, lengths = rank_value_encode(sp.csr_matrix(dense), caps)
    expected = [sorted(np.flatnonzero(row), key=lambda j: -row[j])[:cap] for row, cap in zip(dense, caps, strict=True)]
    assert _ragged_to_lists(tokens, lengths) == [list(map(int, e)) for e in expected]


def test_median_normalization_changes_the_order():
    counts = sp.csr_matrix(np.array([[10.0, 2.0, 7.0]]))
    # gene A is usually high (median 100), gene B usually low (median 1); gene C is unknown
    columns = ColumnMap.build(
        np.array(["A", "B", "C"]),
        {"A": 2, "B": 3},
        4,
        duplicates="sum",
        weights={"A": 10_000 / 100, "B": 10_000 / 1},
    )
    weighted, covered = columns.apply(counts)
    values = scale_rows(weighted, np.array([1 / 19]))
    np.testing.assert_allclose(values.toarray(), [[0, 0, 10 / 19 * 100, 2 / 19 * 10_000]])
    tokens, _ = rank_value_encode(values, 5)
    assert tokens.tolist() == [3, 2]
    assert covered == 12


def test_column_map_duplicate_rules():
    counts = sp.csr_matrix(np.array([[1.0, 5.0, 2.0], [0.0, 0.0, 3.0]]))
    ids = np.array(["A", "B", "A"])
    summed, _ = ColumnMap.build(ids, {"A": 0, "B": 1}, 2, duplicates="sum").apply(counts)
    first, covered = ColumnMap.build(ids, {"A": 0, "B": 1}, 2, duplicates="first").apply(counts)
    np.testing.assert_array_equal(summed.toarray(), [[3, 5], [3, 0]])
    np.testing.assert_array_equal(first.toarray(), [[1, 5], [0, 0]])
    assert covered == 6
    np.testing.assert_array_equal(counts.toarray(), [[1, 5, 2], [0, 0, 3]])  # the input is left as it was
    kept_some, _ = ColumnMap.build(ids, {"A": 0}, 1, duplicates="sum").apply(counts)
    np.testing.assert_array_equal(kept_some.toarray(), [[3], [3]])
    with pytest.raises(ValueError, match="1 duplicated gene identifiers, e.g. \\['A'\\]"):
        ColumnMap.build(ids, {"A": 0, "B": 1}, 2, duplicates="error")


def test_concat_ragged():
    a = (np.array([1, 2, 3]), np.array([2, 0, 1]))
    b = (np.array([7, 8, 9]), np.array([1, 2, 0]))
    tokens, lengths = concat_ragged(a, b)
    assert _ragged_to_lists(tokens, lengths) == [[1, 2, 7], [8, 9], [3]]


def test_short_caps_on_long_rows_keep_the_highest_values_and_the_tie_order():
    """Rows far longer than their cap (a neighborhood's genes): the entries below the cut are dropped unsorted."""
    rng = np.random.default_rng(1)
    dense = rng.integers(1, 60, (300, 500)) / 7.0 * (rng.random((300, 500)) < 0.6)  # many equal values
    dense[:5] *= 1e-30  # tiny values share few buckets
    dense[5:10] *= 1e30
    caps = rng.integers(0, 40, 300)
    tokens, lengths = rank_value_encode(sp.csr_matrix(dense), caps)
    f32 = dense.astype(np.float32)
    expected = [
        sorted(np.flatnonzero(row), key=lambda j: (-row[j], j))[:cap] for row, cap in zip(f32, caps, strict=True)
    ]
    assert _ragged_to_lists(tokens, lengths) == [list(map(int, e)) for e in expected]
