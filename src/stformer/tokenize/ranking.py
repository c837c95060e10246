"""The rank-value kernel: per cell, expressed genes ordered by normalized value, highest first."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_EMPTY = np.uint64(np.iinfo(np.uint64).max)
_ROWS_PER_BLOCK = 512


def scale_rows(matrix: sp.csr_matrix, factors: np.ndarray) -> sp.csr_matrix:
    """Multiply each row of a CSR matrix (cells, genes) by ``factors`` (cells,), in place."""
    matrix.data *= np.repeat(factors, np.diff(matrix.indptr))
    return matrix


def neighbor_sums(adjacency: sp.csr_matrix, values: sp.csr_matrix) -> sp.csr_matrix:
    """``adjacency @ values`` for a binary adjacency (cells, members) and values (members, genes).

    Summed with a dense scatter per block of rows (much faster than a sparse product for
    thousands of non-zeros per row). Returns (cells, genes) CSR without explicit zeros.
    """
    n_rows, n_cols = adjacency.shape[0], values.shape[1]
    data, indices, row_nnz = [], [], []
    step = max(1, 1_000_000 // max(n_cols, 1))
    for lo in range(0, n_rows, step):
        hi = min(lo + step, n_rows)
        sub = adjacency[lo:hi]
        pair_row = np.repeat(np.arange(hi - lo), np.diff(sub.indptr))  # (pairs,)
        member = sub.indices
        member_nnz = np.diff(values.indptr)[member]
        entry = np.repeat(values.indptr[member], member_nnz) + _within(member_nnz)  # (entries,)
        flat = np.repeat(pair_row, member_nnz) * n_cols + values.indices[entry]
        dense = np.bincount(flat, weights=values.data[entry], minlength=(hi - lo) * n_cols)
        nonzero = np.flatnonzero(dense)  # row-major: rows in order, columns sorted
        data.append(dense[nonzero])
        indices.append(nonzero % n_cols)
        row_nnz.append(np.bincount(nonzero // n_cols, minlength=hi - lo))
    if not data:
        return sp.csr_matrix((0, n_cols))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(row_nnz))])
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_rows, n_cols))


def rank_value_encode(values: sp.csr_matrix, max_length: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank each row's non-zero entries by value, highest first; ties go to the lower token id.

    values: (cells, vocab) CSR of positive normalized values whose column index is the token id
    (indices need not be sorted); max_length: int or (cells,) cap per row.
    Returns ``(tokens, lengths)``: flat int32 tokens of all rows, one after another, and (cells,)
    int64 lengths.

    >>> v = sp.csr_matrix(np.array([[0.0, 2.0, 5.0], [1.0, 1.0, 0.0]]))
    >>> rank_value_encode(v, 2)
    (array([2, 1, 0, 1], dtype=int32), array([2, 2]))
    """
    n_rows = values.shape[0]
    counts = np.diff(values.indptr)
    lengths = np.minimum(counts, max_length).astype(np.int64)
    # One uint64 key per entry: high 32 bits order by value (descending), low 32 bits by token id.
    # Positive float32 bit patterns sort like the floats themselves.
    value_bits = values.data.astype(np.float32).view(np.uint32).astype(np.uint64)
    keys = ((np.uint64(0xFFFFFFFF) - value_bits) << np.uint64(32)) | values.indices.astype(np.uint64)
    out = np.empty(int(lengths.sum()), dtype=np.int32)
    out_offsets = np.concatenate([[0], np.cumsum(lengths)])
    for lo in range(0, n_rows, _ROWS_PER_BLOCK):
        hi = min(lo + _ROWS_PER_BLOCK, n_rows)
        width = int(counts[lo:hi].max(initial=0))
        if width == 0:
            continue
        block_counts = counts[lo:hi]
        block = np.full((hi - lo, width), _EMPTY, dtype=np.uint64)  # (rows, width)
        row_of = np.repeat(np.arange(hi - lo), block_counts)
        start = values.indptr[lo]
        col_of = _within(block_counts)
        block[row_of, col_of] = keys[start : values.indptr[hi]]
        block.sort(axis=1)
        keep = np.arange(width) < lengths[lo:hi, None]  # (rows, width)
        out[out_offsets[lo] : out_offsets[hi]] = (block[keep] & np.uint64(0xFFFFFFFF)).astype(np.int32)
    return out, lengths


def concat_ragged(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise concatenation of two ragged arrays given as ``(flat values, lengths)``."""
    (a, a_len), (b, b_len) = first, second
    lengths = a_len + b_len
    out = np.empty(int(lengths.sum()), dtype=a.dtype)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    a_pos = np.repeat(starts, a_len) + _within(a_len)
    b_pos = np.repeat(starts + a_len, b_len) + _within(b_len)
    out[a_pos] = a
    out[b_pos] = b
    return out, lengths


def _within(lengths: np.ndarray) -> np.ndarray:
    """Position of each element inside its row: [0..l0-1, 0..l1-1, ...]."""
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.arange(int(lengths.sum())) - np.repeat(offsets, lengths)
