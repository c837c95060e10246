"""The rank-value kernel: per cell, expressed genes ordered by normalized value, highest first."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._errors import InputError


def scale_rows(matrix: sp.csr_matrix, factors: np.ndarray) -> sp.csr_matrix:
    """Multiply each row of a CSR matrix (cells, genes) by ``factors`` (cells,), in place."""
    matrix.data *= np.repeat(factors, np.diff(matrix.indptr))
    return matrix


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
    n_rows, n_cols = values.shape
    counts = np.diff(values.indptr)
    lengths = np.minimum(counts, max_length).astype(np.int64)
    # One uint64 key per entry, sorted ascending within blocks of rows:
    #   [row within block | inverted float32 bits of the value | token id]
    # Positive float32 bit patterns order like the floats, so inverting them puts the highest
    # value first; equal values fall back to the lower token id.
    token_bits = max(1, int(n_cols - 1).bit_length())
    row_bits = min(32 - token_bits, 12)
    if row_bits < 1:
        msg = f"vocabularies of more than 2**31 tokens are not supported (got {n_cols})"
        raise InputError(msg)
    rows_per_block = 1 << row_bits
    keys = np.invert(values.data.astype(np.float32).view(np.uint32)).astype(np.uint64)
    keys <<= np.uint64(token_bits)
    keys |= values.indices.astype(np.uint64)
    row_in_block = np.arange(n_rows, dtype=np.uint64) & np.uint64(rows_per_block - 1)
    keys |= np.repeat(row_in_block << np.uint64(32 + token_bits), counts)
    for lo in range(0, n_rows, rows_per_block):
        keys[values.indptr[lo] : values.indptr[min(lo + rows_per_block, n_rows)]].sort()
    excess = counts - lengths
    if excess.any():  # drop each row's entries past its length
        keep = np.ones(len(keys), dtype=bool)
        keep[np.repeat(values.indptr[1:] - excess, excess) + _within(excess)] = False
        keys = keys[keep]
    return (keys & np.uint64((1 << token_bits) - 1)).astype(np.int32), lengths


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
