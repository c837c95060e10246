"""The network's statistics: the differential test between two states, the co-expression baseline, their overlap.

Differential test (the unit is the cell). For an edge, each cell holding both genes has a
value, its length-scaled attention from one gene to the other; the statistic is the difference
of the two states' mean values. Under the null hypothesis the state labels are exchangeable among
the cells, so the p-value is the share of random relabellings (the cells of the two states
shuffled, their numbers kept) whose difference is at least as large in absolute value:
``(1 + b) / (1 + permutations)``. Only edges chosen without looking at the states are tested (the
highest weights over both states pooled, which no relabelling changes), so the p-values stay valid
and Benjamini-Hochberg FDR over the tested edges controls the false discoveries among them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import false_discovery_control, rankdata

PERMUTATION_BLOCK = 1000  # relabellings per matrix product, at most
FDR_LEVEL = 0.05  # an edge whose FDR is below this is a discovery
LABEL_BUDGET = 2**24  # relabellings x cells held at once: 128 MB in float64, whatever the number of cells


def differential_test(
    values: np.ndarray, present: np.ndarray, first: np.ndarray, permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per edge: the first state's mean minus the second's, and its two-sided permutation p-value.

    values: (cells, edges) float, any value where absent; present: (cells, edges) bool, both
    genes in the cell; first: (cells,) bool, the cell is of the first state. Returns
    ``(difference, p)`` (edges,); NaN for an edge absent from every cell of a state.

    >>> rng = np.random.default_rng(0)
    >>> diff, p = differential_test(rng.normal(size=(40, 3)), np.ones((40, 3), bool), np.arange(40) < 20, 999, 0)
    >>> bool((p > 0).all() and (p <= 1).all())
    True
    """
    weights = np.where(present, values, 0.0).astype(np.float64)  # (cells, edges)
    counts = present.astype(np.float64)
    total_sum, total_count = weights.sum(0), counts.sum(0)  # (edges,)

    def difference(labels: np.ndarray) -> np.ndarray:  # labels (relabellings, cells) 0/1 -> (relabellings, edges)
        first_sum, first_count = labels @ weights, labels @ counts
        with np.errstate(divide="ignore", invalid="ignore"):
            return first_sum / first_count - (total_sum - first_sum) / (total_count - first_count)

    observed = difference(first[None].astype(np.float64))[0]  # (edges,)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(observed))
    block = max(1, min(PERMUTATION_BLOCK, LABEL_BUDGET // len(first)))
    for start in range(0, permutations, block):
        n = min(block, permutations - start)
        labels = rng.permuted(np.tile(first.astype(np.float64), (n, 1)), axis=1)  # (n, cells)
        exceed += (np.abs(difference(labels)) >= np.abs(observed) * (1 - 1e-12)).sum(0)
    p = (1 + exceed) / (1 + permutations)
    p[np.isnan(observed)] = np.nan
    return observed, p


def most_significant(edges: pd.DataFrame) -> pd.DataFrame:
    """The tested edges of a differential network, most significant first: by p-value, ties by larger |difference|.

    Permutation p-values tie at their floor ``1 / (1 + permutations)``, so among equally
    significant edges the larger change comes first.
    """
    tested = edges.dropna(subset=["p_value"])
    return tested.iloc[np.lexsort((-tested["difference"].abs().to_numpy(), tested["p_value"].to_numpy()))]


def discoveries(edges: pd.DataFrame) -> str:
    """``"<n> of <tested> tested edges at FDR < 0.05"``: the differential network's discoveries in words."""
    found, tested = int((edges["fdr"] < FDR_LEVEL).sum()), int(edges["p_value"].notna().sum())
    return f"{found} of {tested} tested edges at FDR < {FDR_LEVEL}"


def fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the finite entries of ``p`` (NaN stays NaN)."""
    out = np.full(len(p), np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = false_discovery_control(p[finite], method="bh")
    return out


def coexpression(expression: sp.spmatrix | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation between genes over cells, and the cells expressing both.

    expression: (cells, genes). Returns ``(rho, both)``, each (genes, genes); rho is 0 for a
    gene constant over the cells.

    >>> x = np.array([[1.0, 2, 0], [2, 4, 1], [3, 5, 0], [0, 1, 2]])
    >>> rho, both = coexpression(x)
    >>> round(float(rho[0, 1]), 3), int(both[0, 2])
    (1.0, 1)
    """
    dense = expression.toarray() if sp.issparse(expression) else np.asarray(expression)
    ranks = rankdata(dense, axis=0)  # (cells, genes) ties averaged, as Spearman's rho does
    ranks -= ranks.mean(0)
    scale = np.sqrt((ranks**2).sum(0))
    ranks = np.divide(ranks, scale, out=np.zeros_like(ranks), where=scale > 0)
    expressed = (dense > 0).astype(np.float64)
    return ranks.T @ ranks, expressed.T @ expressed


def top_pairs(scores: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The ``k`` unordered gene pairs (i < j) of highest ``scores`` (genes, genes); NaN never chosen."""
    upper = np.triu_indices(len(scores), 1)
    values = np.nan_to_num(scores[upper], nan=-np.inf)
    chosen = np.argsort(-values, kind="stable")[:k]
    chosen = chosen[np.isfinite(values[chosen])]
    return set(zip(upper[0][chosen].tolist(), upper[1][chosen].tolist(), strict=True))


def overlap(attention: np.ndarray, rho: np.ndarray, k: int) -> dict:
    """How many of the ``k`` strongest attention pairs are among the ``k`` strongest co-expression pairs.

    attention: (genes, genes) directed edge weights (NaN: too few cells); a pair's strength is
    the larger of its two directions. rho: (genes, genes) Spearman correlations, by absolute
    value. Returns ``{"k", "shared", "expected"}`` (``expected``: by chance, k^2 / pairs).
    """
    both = np.fmax(attention, attention.T)  # (genes, genes) symmetric
    n_pairs = len(rho) * (len(rho) - 1) // 2
    k = min(k, n_pairs)
    shared = len(top_pairs(both, k) & top_pairs(np.abs(rho), k))
    return {"k": k, "shared": shared, "expected": round(k * k / max(n_pairs, 1), 2)}
