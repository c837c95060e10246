"""Real Visium tissue: an excerpt of DLPFC slice 151673 (Maynard et al. 2021; via paste2's sdist, BSD-3).

598 spots of a strip across the cortex, the 1,500 most-counted genes, ``obs["n_counts"]`` over
all genes, pixel coordinates, and ``obsp["spatial_connectivities"]`` written by squidpy 1.8.2
(``sq.gr.spatial_neighbors(adata, coord_type="grid", n_neighs=6)``): the Visium hexagonal grid.
"""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from datasets import load_from_disk

from stformer import TokenizerConfig, build_token_dictionary, compute_gene_medians, tokenize_data
from stformer.tokenize._sources import open_source
from stformer.tokenize.neighbors import neighbor_graph

EXCERPT = Path(__file__).parent / "data" / "dlpfc_151673_excerpt.h5ad"


def _graph(**options):
    with open_source(EXCERPT, layer=None, gene_id_column=None) as src:
        return neighbor_graph(src, TokenizerConfig(mode="neighborhood", **options))


def test_six_nearest_spots_are_the_visium_grid_neighbors_squidpy_found():
    squidpy = _graph(connectivities_key="spatial_connectivities")
    nearest = _graph(n_neighbors=6)  # the default, on pixel coordinates
    degree = np.diff(squidpy.indptr)
    interior = np.flatnonzero(degree == 6)
    assert len(interior) > 400  # most of the strip; its edges have fewer grid neighbors
    for spot in interior:
        assert set(nearest[spot].indices) == set(squidpy[spot].indices)
    adata = ad.read_h5ad(EXCERPT)
    assert (squidpy != (adata.obsp["spatial_connectivities"] > 0)).nnz == 0  # read as squidpy wrote it


def test_neighborhood_tokens_from_squidpys_graph(tmp_path):
    medians = compute_gene_medians(EXCERPT, method="exact", progress=False)
    vocab = build_token_dictionary(medians)
    settings = {"mode": "neighborhood", "max_length": 64, "metadata_columns": ["layer"], "progress": False}
    tokenize_data(EXCERPT, tmp_path / "sq", medians, vocab, connectivities_key="spatial_connectivities", **settings)
    tokens = load_from_disk(str(tmp_path / "sq"))
    adata = ad.read_h5ad(EXCERPT)
    counts, totals = adata.X.toarray().astype(np.float64), adata.obs["n_counts"].to_numpy(np.float64)
    graph = adata.obsp["spatial_connectivities"]
    ids = np.array([vocab[g] for g in adata.var_names])
    values = counts / np.array([medians[g] for g in adata.var_names])
    for row in (0, 100, 300):
        neighbors = graph[row].indices
        # the neighbors' part: their summed counts over their summed totals, divided by the medians, ranked
        summed = values[neighbors].sum(0) / totals[neighbors].sum()
        start = tokens[row]["neighbor_start"]
        part = tokens[row]["input_ids"][start:]
        expected = ids[np.argsort(-summed, kind="stable")][: len(part)]
        got_values = dict(zip(ids, summed, strict=True))
        assert [got_values[t] for t in part] == pytest.approx(sorted((got_values[t] for t in expected), reverse=True))
        own = values[row] / totals[row]
        assert set(tokens[row]["input_ids"][:start]) == set(ids[np.argsort(-own, kind="stable")][:start])
    assert tokens["layer"][0] == adata.obs["layer"].iloc[0]
