"""Real demo data that ships with scanpy (no download): PBMCs with integer counts."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def pbmc68k_counts():
    """Scanpy's ``pbmc68k_reduced`` (700 cells, 765 genes, 10 ``bulk_labels``) as raw counts.

    ``.raw`` holds log1p of counts scaled to 10,000 per cell; integer counts come back exactly
    as ``round(expm1(raw.X) * n_counts / 10,000)``. ``obs["n_counts"]`` keeps each cell's total
    over all genes originally measured. Needs scanpy (``pip install 'stformer[demo]'``).
    """
    import anndata as ad
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    n_counts = pbmc.obs["n_counts"].to_numpy()[:, None]
    counts = np.round(np.expm1(pbmc.raw.X.toarray()) * n_counts / 10_000).astype(np.float32)
    return ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pbmc.obs[["bulk_labels", "n_counts", "louvain"]].copy(),
        var=pbmc.raw.var[[]].copy(),
    )
