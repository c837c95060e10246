"""Synthetic data generators for tests and benchmarks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def gene_names(n_genes: int) -> list[str]:
    return [f"ENSG{i:011d}" for i in range(n_genes)]


def counts_matrix(n_cells: int, n_genes: int, *, expressed: int = 200, seed: int = 0) -> sp.csr_matrix:
    """Sparse negative-binomial-like counts: about ``expressed`` non-zero genes per cell."""
    rng = np.random.default_rng(seed)
    gene_rate = rng.gamma(0.6, 1.0, n_genes)  # skewed gene popularity
    p = gene_rate / gene_rate.sum()
    n_expr = np.clip(rng.poisson(expressed, n_cells), 1, n_genes)
    indptr = np.concatenate([[0], np.cumsum(n_expr)])
    indices = np.empty(indptr[-1], dtype=np.int32)
    for i in range(n_cells):
        indices[indptr[i] : indptr[i + 1]] = np.sort(rng.choice(n_genes, n_expr[i], replace=False, p=p))
    data = rng.negative_binomial(2, 0.3, indptr[-1]).astype(np.float32) + 1
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))


def make_adata(
    n_cells: int = 300,
    n_genes: int = 500,
    *,
    expressed: int = 60,
    n_samples: int = 1,
    seed: int = 0,
) -> ad.AnnData:
    """AnnData with counts, cell types, samples and spatial coordinates (one grid per sample)."""
    rng = np.random.default_rng(seed)
    X = counts_matrix(n_cells, n_genes, expressed=expressed, seed=seed)
    sample = np.repeat(np.arange(n_samples), -(-n_cells // n_samples))[:n_cells]
    side = int(np.ceil(np.sqrt(n_cells / n_samples)))
    within = np.concatenate([np.arange(np.sum(sample == s)) for s in range(n_samples)])
    coords = np.stack([within % side, within // side], axis=1).astype(float)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n_cells)),
            "sample": [f"slide{s}" for s in sample],
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=gene_names(n_genes))
    return ad.AnnData(X=X, obs=obs, var=var, obsm={"spatial": coords})


def planted_state_adata(
    n_cells: int = 500, n_genes: int = 50, *, planted: int = 0, shuffles: int = 1, seed: int = 0
) -> ad.AnnData:
    """Two states told apart by one gene alone: ``state`` "A" cells express gene ``planted``, "B" cells never do.

    Every other gene is expressed in either state with the same probability and counts, so only
    the planted gene's presence separates A from B. ``obs["shuffled_1"]`` ... ``shuffled_<shuffles>``
    hold the states permuted (labels with no relation to expression).
    """
    rng = np.random.default_rng(seed)
    state = np.where(np.arange(n_cells) % 2 == 0, "A", "B")
    counts = rng.negative_binomial(2, 0.3, (n_cells, n_genes)).astype(np.float32) + 1
    counts *= rng.random((n_cells, n_genes)) < 0.6  # each gene detected in 60% of the cells
    counts[:, planted] = np.where(state == "A", rng.negative_binomial(2, 0.3, n_cells) + 1, 0)
    shuffled = {f"shuffled_{k}": pd.Categorical(rng.permutation(state)) for k in range(1, shuffles + 1)}
    obs = pd.DataFrame({"state": pd.Categorical(state), **shuffled}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=gene_names(n_genes)))


def planted_edge_adata(
    n_cells: int = 600, n_genes: int = 50, *, source: int = 0, target: int = 1, seed: int = 0
) -> ad.AnnData:
    """Gene ``target`` is expressed only in cells where gene ``source`` is high; every other gene independently.

    ``source`` is expressed in every cell, "high" above its median.
    """
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(2, 0.3, (n_cells, n_genes)).astype(np.float32) + 1
    counts *= rng.random((n_cells, n_genes)) < 0.6  # each gene detected in 60% of the cells
    counts[:, source] = rng.negative_binomial(2, 0.3, n_cells) + 1
    high = counts[:, source] > np.median(counts[:, source])
    counts[:, target] = np.where(high, rng.negative_binomial(2, 0.3, n_cells) + 1, 0)
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=gene_names(n_genes)))
