"""Pieces shared by the medians and tokenizer stages: options, totals and input checks."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from .._errors import InputError
from .._warnings import StformerWarning
from ..settings import InputOptions
from ._genes import map_gene_ids
from ._sources import CountSource


def gene_ids_of(source: CountSource, options: InputOptions) -> np.ndarray:
    """Identifiers of a file's matrix columns after the optional mapping ('' when unmapped)."""
    return map_gene_ids(source.raw_gene_ids, options.resolved_mapping())


def stored_totals(source: CountSource, options: InputOptions) -> np.ndarray | None:
    """Per-cell totals (n_obs,) from ``options.total_counts_column``, or ``None`` when absent."""
    column = options.total_counts_column
    stored = source.obs_column(column) if column else None
    return None if stored is None else np.asarray(stored, dtype=np.float64)


def chunk_totals(stored: np.ndarray | None, counts: sp.csr_matrix, rows: slice | np.ndarray) -> np.ndarray:
    """Totals (cells,) of the cells at ``rows``: stored values when given, else row sums."""
    if stored is None:
        return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    return stored[rows]


def check_counts(
    source: CountSource, counts: sp.csr_matrix, totals: np.ndarray, options: InputOptions, *, first_row: int = 0
) -> None:
    """Check one chunk of counts (cells, genes), rows ``first_row`` onward, and its totals (cells,).

    Called on every chunk: fails on non-finite or negative values (naming the file, the layer and
    the first offending row) and on totals below the row sums; the first chunk also warns when the
    values look log-transformed or normalized.
    """
    data = counts.data
    layer = options.layer or "X"
    for bad, what, fix in (
        (~np.isfinite(data), "a non-finite value", "counts must be finite numbers: repair or remove that cell"),
        (data < 0, "a negative value", "expected raw counts; choose the counts layer with layer=..."),
    ):
        if bad.any():
            position = int(np.argmax(bad))
            row = first_row + int(np.searchsorted(counts.indptr, position, side="right")) - 1
            msg = f"{source.path}: layer {layer} holds {what} ({data[position]}) in row {row}; {fix}"
            raise InputError(msg)
    row_sums = np.asarray(counts.sum(axis=1)).ravel()
    if np.any(totals < row_sums * (1 - 1e-6)):
        msg = (
            f"{source.path}: obs column {options.total_counts_column!r} is smaller than the sum "
            "of the matrix row for some cells, so it cannot be their total counts; fix the column "
            "or pass total_counts_column=None to compute totals from the matrix"
        )
        raise InputError(msg)
    if first_row > 0 or options.accept_normalized or not data.size:
        return
    fractional = np.mean(data != np.round(data))
    if fractional > 0:
        looks = "log-transformed" if data.max() < 30 else "normalized"
        warnings.warn(
            f"{source.path}: {fractional:.0%} of the values in layer {layer} are "
            f"not integers (max {data.max():.3g}); the data look {looks}. stformer expects raw "
            "counts: choose the counts layer with layer=... (e.g. 'raw' or 'counts'), or pass "
            "accept_normalized=True to rank these values as they are.",
            StformerWarning,
            stacklevel=3,
        )
