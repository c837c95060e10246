"""How ``dlpfc_151673_excerpt.h5ad`` was made (run once by hand; the tests only read the result).

Needs squidpy (1.8.2 here, not a dependency of stformer or its tests) and paste2's source
distribution (``pip download --no-deps --no-binary :all: paste2==1.0.1``, as ``make demo-spatial``).

    python tests/data/make_dlpfc_excerpt.py paste2-1.0.1.tar.gz tests/data/dlpfc_151673_excerpt.h5ad
"""

import sys
import tarfile

import anndata as ad
import numpy as np
import scipy.sparse as sp
import squidpy as sq

archive, out = sys.argv[1:3]
with tarfile.open(archive) as tar:
    full = ad.read_h5ad(tar.extractfile("paste2-1.0.1/sample_data/151673.h5ad"))
xy = full.obsm["spatial"].astype(float)
strip = np.abs(xy[:, 0] - np.median(xy[:, 0])) < 600  # a band across every cortical layer: 598 spots
part = full[strip].copy()
genes = np.sort(np.argsort(-np.asarray(part.X.sum(0)).ravel())[:1500])  # the 1,500 most-counted genes
excerpt = ad.AnnData(
    X=sp.csr_matrix(part.X[:, genes], dtype=np.float32),
    obs=part.obs.assign(layer=part.obs["layer_guess"].astype(str), n_counts=np.asarray(part.X.sum(1)).ravel())[
        ["layer", "n_counts"]
    ],  # n_counts over every gene of the slice
    var=part.var.iloc[genes][["gene_ids"]],
)
excerpt.obsm["spatial"] = part.obsm["spatial"]
sq.gr.spatial_neighbors(excerpt, coord_type="grid", n_neighs=6)  # Visium's hexagonal grid
excerpt.write_h5ad(out, compression="gzip")
