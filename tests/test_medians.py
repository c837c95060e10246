import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from synthetic import make_adata

from stformer import compute_gene_medians


def _hand_medians(X, genes):
    X = np.asarray(X, dtype=float)
    norm = X / X.sum(1, keepdims=True) * 10_000
    return {g: float(np.median(norm[:, j][norm[:, j] > 0])) for j, g in enumerate(genes) if (norm[:, j] > 0).any()}


def test_exact_medians_by_hand(tmp_path):
    X = np.array([[1, 0, 3], [2, 2, 0], [0, 5, 5], [4, 0, 0]], dtype=np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    adata.var_names = ["A", "B", "C"]
    adata.write_h5ad(tmp_path / "a.h5ad")
    got = compute_gene_medians(tmp_path / "a.h5ad", method="exact", progress=False)
    # A: cells 0,1,3 -> 2500, 5000, 10000; B: 5000, 5000; C: 7500, 5000
    assert got == pytest.approx({"A": 5000.0, "B": 5000.0, "C": 6250.0})


def test_files_pool_and_chunks_do_not_matter(tmp_path):
    adata = make_adata(300, 80, expressed=20, seed=1)
    adata[:170].copy().write_h5ad(tmp_path / "part1.h5ad")
    adata[170:].copy().write_h5ad(tmp_path / "part2.h5ad")
    pooled = compute_gene_medians(
        [tmp_path / "part1.h5ad", tmp_path / "part2.h5ad"],
        method="exact",
        chunk_size=37,
        progress=False,
    )
    expected = _hand_medians(adata.X.toarray(), adata.var_names)
    assert pooled.keys() == expected.keys()
    assert pooled == pytest.approx(expected, rel=1e-6)


def test_tdigest_close_to_exact(tmp_path):
    adata = make_adata(2000, 50, expressed=25, seed=2)
    adata.write_h5ad(tmp_path / "a.h5ad")
    exact = compute_gene_medians(tmp_path / "a.h5ad", method="exact", progress=False)
    approx = compute_gene_medians(tmp_path / "a.h5ad", method="tdigest", progress=False)
    assert approx.keys() == exact.keys()
    rel = np.array([abs(approx[g] - exact[g]) / exact[g] for g in exact])
    assert np.median(rel) < 0.01 and rel.max() < 0.1


def test_loom_matches_h5ad(tmp_path):
    adata = make_adata(120, 60, expressed=15, seed=4)
    adata.write_h5ad(tmp_path / "a.h5ad")
    adata.var["ensembl_id"] = adata.var_names
    adata.write_loom(tmp_path / "a.loom")
    from_h5ad = compute_gene_medians(tmp_path / "a.h5ad", method="exact", progress=False)
    from_loom = compute_gene_medians(tmp_path / "a.loom", method="exact", progress=False)
    assert from_loom == pytest.approx(from_h5ad)


def test_gene_mapping_and_duplicates_sum(tmp_path):
    X = np.array([[1, 1, 2], [0, 3, 1]], dtype=np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    adata.var_names = ["sym1", "sym1b", "sym2"]
    adata.write_h5ad(tmp_path / "a.h5ad")
    mapping = {"sym1": "ENSG1", "sym1b": "ENSG1", "sym2": "ENSG2"}
    got = compute_gene_medians(
        tmp_path / "a.h5ad",
        method="exact",
        gene_mapping=mapping,
        progress=False,
    )
    # ENSG1 = sym1 + sym1b: cell0 2/4, cell1 3/4 -> 5000, 7500
    assert got == pytest.approx({"ENSG1": 6250.0, "ENSG2": 3750.0})


def test_bad_method_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        compute_gene_medians(tmp_path, method="mean")
    with pytest.raises(FileNotFoundError, match="nope.h5ad: file not found"):
        compute_gene_medians(tmp_path / "nope.h5ad")
