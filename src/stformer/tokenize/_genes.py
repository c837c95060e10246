"""Gene identifiers: translation through a mapping, and where each matrix column goes in the vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError


def map_gene_ids(raw_ids: np.ndarray, gene_mapping: dict[str, str] | None) -> np.ndarray:
    """Translate identifiers through ``gene_mapping`` (e.g. symbol -> Ensembl); unmapped -> ''."""
    if gene_mapping is None:
        return raw_ids
    return pd.Series(raw_ids).map(gene_mapping).fillna("").to_numpy().astype(str)


@dataclass
class ColumnMap:
    """Where each column of a file's matrix goes: a target column (-1: dropped) and a weight.

    ``apply(counts)`` turns a (cells, file genes) CSR into (cells, n_targets) CSR holding
    ``count * weight``; duplicated identifiers are summed into one target column.
    """

    target: np.ndarray  # (file genes,) int32 target column, -1 when the gene is not kept
    weight: np.ndarray  # (n_targets,) float64 weight of each target column
    n_targets: int
    has_duplicates: bool  # duplicated identifiers whose counts ``apply`` sums
    n_duplicated: int  # columns whose identifier repeats an earlier column's

    @classmethod
    def build(
        cls,
        gene_ids: np.ndarray,
        targets: dict[str, int],
        n_targets: int,
        *,
        duplicates: str,
        weights: dict[str, float] | None = None,
        source: str = "",
    ) -> ColumnMap:
        """Map identifiers onto ``targets``; ``duplicates``: ``"sum"``, ``"first"`` or ``"error"`` (as InputOptions)."""
        target = np.fromiter((targets.get(g, -1) for g in gene_ids), np.int32, len(gene_ids))
        kept = target >= 0
        repeated = kept & pd.Series(target).duplicated().to_numpy()
        if repeated.any() and duplicates == "error":
            examples = [str(g) for g in pd.unique(gene_ids[repeated])[:5]]
            msg = (
                f"{source}: {int(repeated.sum())} duplicated gene identifiers, e.g. {examples}; "
                "pass duplicate_genes='sum' or 'first'"
            )
            raise InputError(msg)
        if duplicates == "first":
            target[repeated] = -1
        weight = np.ones(n_targets)
        for gene, value in (weights or {}).items():
            if gene in targets:
                weight[targets[gene]] = value
        has_duplicates = bool(repeated.any()) and duplicates == "sum"
        return cls(
            target=target,
            weight=weight,
            n_targets=n_targets,
            has_duplicates=has_duplicates,
            n_duplicated=int(repeated.sum()),
        )

    def apply(self, counts: sp.csr_matrix) -> tuple[sp.csr_matrix, float]:
        """Map (cells, file genes) counts to (cells, n_targets) weighted counts, zeros dropped.

        Also returns the sum of the counts that fell in kept columns (the vocabulary coverage).
        """
        target = self.target[counts.indices]
        keep = target >= 0
        if not counts.data.all():  # explicit zeros are rare
            keep &= counts.data != 0
        if keep.all():  # every column kept (a vocabulary built from these files): no copies
            indptr, kept_counts, columns = counts.indptr.copy(), counts.data, target
        else:
            positions = np.flatnonzero(keep)
            indptr = np.searchsorted(positions, counts.indptr)
            kept_counts, columns = counts.data[positions], target[positions]
        out = sp.csr_matrix(
            (kept_counts * self.weight[columns], columns, indptr), shape=(counts.shape[0], self.n_targets)
        )
        if self.has_duplicates:
            out.sum_duplicates()
        return out, float(kept_counts.sum())
