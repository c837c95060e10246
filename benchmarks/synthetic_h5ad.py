"""Write large synthetic count h5ad files chunk by chunk (memory bounded by the chunk).

Cells express about ``expressed`` of ``n_genes`` genes (skewed gene popularity, negative-binomial
counts); ``obs`` has ``n_counts``, ``sample`` (4 slides) and ``cell_type``; ``obsm["spatial"]``
holds grid coordinates per slide; ``var["ensembl_id"]`` repeats ``var_names`` (the reference
package needs it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem


def _chunk(rng, n_cells, gene_p):
    hits = rng.random((n_cells, len(gene_p)), dtype=np.float32) < gene_p  # (cells, genes)
    X = sp.csr_matrix(hits, dtype=np.float32)
    X.data = rng.negative_binomial(2, 0.3, X.nnz).astype(np.float32) + 1
    return X


def write_synthetic(
    path: Path,
    n_cells: int,
    n_genes: int,
    expressed: int,
    seed: int = 0,
    chunk: int = 2000,
    n_samples: int = 4,
) -> Path:
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, n_genes)
    gene_p = np.minimum(popularity / popularity.mean() * expressed / n_genes, 0.95).astype(np.float32)
    genes = [f"ENSG{i:011d}" for i in range(n_genes)]
    tmp = path.with_suffix(".tmp")
    totals = np.empty(n_cells)
    with h5py.File(tmp, "w") as f:
        for start in range(0, n_cells, chunk):
            X = _chunk(rng, min(chunk, n_cells - start), gene_p)
            totals[start : start + X.shape[0]] = X.sum(1).A1
            if start == 0:
                write_elem(f, "X", X)
                matrix = sparse_dataset(f["X"])
            else:
                matrix.append(X)
        sample = np.arange(n_cells) * n_samples // n_cells
        within = np.arange(n_cells) - np.searchsorted(sample, sample)
        side = int(np.ceil(np.sqrt(n_cells / n_samples)))
        obs = pd.DataFrame(
            {
                "n_counts": totals,
                "sample": pd.Categorical([f"slide{s}" for s in sample]),
                "cell_type": pd.Categorical(rng.choice(["T", "B", "NK", "Mono"], n_cells)),
            },
            index=[f"c{i}" for i in range(n_cells)],
        )
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame({"ensembl_id": genes}, index=genes))
        write_elem(f, "obsm", {"spatial": np.stack([within % side, within // side], 1).astype(float)})
        for key in ("layers", "obsp", "varm", "varp", "uns"):
            write_elem(f, key, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    tmp.rename(path)
    return path


def ensure(path: Path, n_cells: int, n_genes: int, expressed: int) -> Path:
    """Create the file once; later runs reuse it."""
    if not path.exists():
        start = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic(path, n_cells, n_genes, expressed)
        print(f"# wrote {path} ({n_cells} cells x {n_genes} genes) in {time.perf_counter() - start:.0f} s")
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--expressed", type=int, default=2000)
    a = p.parse_args()
    ensure(a.out, a.cells, a.genes, a.expressed)
    print(ad.read_h5ad(a.out, backed="r"))
