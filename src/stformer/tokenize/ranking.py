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
    data, indices, indptr = values.data.astype(np.float32), values.indices, values.indptr
    counts = np.diff(indptr)
    lengths = np.minimum(counts, max_length).astype(np.int64)
    if counts.sum() > 2 * lengths.sum():  # most entries miss their row's cut: drop them before sorting
        data, indices, counts = _candidates(data, indices, counts, lengths)
        indptr = np.concatenate([[0], np.cumsum(counts)])
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
    keys = np.invert(data.view(np.uint32)).astype(np.uint64)
    keys <<= np.uint64(token_bits)
    keys |= indices.astype(np.uint64)
    row_in_block = np.arange(n_rows, dtype=np.uint64) & np.uint64(rows_per_block - 1)
    keys |= np.repeat(row_in_block << np.uint64(32 + token_bits), counts)
    for lo in range(0, n_rows, rows_per_block):
        keys[indptr[lo] : indptr[min(lo + rows_per_block, n_rows)]].sort()
    excess = counts - lengths
    if excess.any():  # drop each row's entries past its length
        keep = np.ones(len(keys), dtype=bool)
        keep[np.repeat(indptr[1:] - excess, excess) + _within(excess)] = False
        keys = keys[keep]
    return (keys & np.uint64((1 << token_bits) - 1)).astype(np.int32), lengths


def _candidates(
    data: np.ndarray, indices: np.ndarray, counts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's entries that can be among its ``lengths`` highest, in their order; their (rows,) counts.

    data: (entries,) positive float32 values of the rows one after another, ``counts`` per row.
    Values fall in buckets of their float32 bits (exponent and 2 mantissa bits: 4 per octave);
    a row keeps the entries in and above the highest bucket that leaves it ``lengths`` entries.
    Equal values share a bucket, so the ranking of the kept entries is the ranking of all.
    """
    bucket = (data.view(np.uint32) >> np.uint32(21)).astype(np.int64)  # (entries,) ordered like the values
    low, n_buckets = bucket.min(), int(bucket.max() - bucket.min()) + 1
    row = np.repeat(np.arange(len(counts)), counts)  # (entries,)
    per_bucket = np.bincount(row * n_buckets + (bucket - low), minlength=len(counts) * n_buckets)
    at_or_above = np.cumsum(per_bucket.reshape(len(counts), n_buckets)[:, ::-1], axis=1)[:, ::-1]  # (rows, buckets)
    cut = low + (at_or_above >= lengths[:, None]).sum(1) - 1  # (rows,) lowest bucket kept
    keep = bucket >= cut[row]
    return data[keep], indices[keep], np.bincount(row[keep], minlength=len(counts))


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
