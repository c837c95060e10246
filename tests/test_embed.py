import anndata as ad
import numpy as np
import pytest
from datasets import load_from_disk

from stformer import embed, write_embeddings
from stformer.cli import main


def test_cell_embeddings_are_batch_size_invariant_and_mean_pooled(pretrained, token_dataset):
    small = embed(pretrained, token_dataset, batch_size=1, progress=False)
    big = embed(pretrained, token_dataset, batch_size=64, genes=True, progress=False)
    assert small["cells"].shape == (160, 32)
    np.testing.assert_allclose(small["cells"], big["cells"], atol=1e-5)
    assert list(big["cell_ids"]) == load_from_disk(str(token_dataset))["cell_id"]
    # a gene's embedding is the mean of its hidden states: bounded by the cells' values range
    assert big["genes"].shape == (len(big["gene_tokens"]), 32) and np.isfinite(big["genes"]).all()
    first_layer = embed(pretrained, token_dataset, layer=0, progress=False)
    assert not np.allclose(first_layer["cells"], big["cells"])
    with pytest.raises(ValueError, match="layer must lie in"):
        embed(pretrained, token_dataset, layer=9, progress=False)


def test_write_embeddings_into_anndata_copy(pretrained, token_dataset, tmp_path):
    source = token_dataset.parent / "cells.h5ad"
    result = embed(pretrained, token_dataset, progress=False)
    write_embeddings(result, tmp_path / "emb.npz", h5ad=source, h5ad_out=tmp_path / "with.h5ad")
    adata = ad.read_h5ad(tmp_path / "with.h5ad")
    assert adata.obsm["X_stformer"].shape == (adata.n_obs, 32)
    row = list(adata.obs_names).index(result["cell_ids"][5])
    np.testing.assert_allclose(adata.obsm["X_stformer"][row], result["cells"][5])
    assert "X_stformer" not in ad.read_h5ad(source).obsm  # the input is left as it was
    saved = np.load(tmp_path / "emb.npz")
    np.testing.assert_array_equal(saved["cells"], result["cells"])


def test_embed_cli(pretrained, token_dataset, tmp_path):
    assert (
        main(
            [
                "embed",
                str(token_dataset),
                "--model",
                str(pretrained),
                "--out",
                str(tmp_path / "e.npz"),
                "--genes",
                "--quiet",
            ]
        )
        == 0
    )
    assert set(np.load(tmp_path / "e.npz").files) == {"cells", "cell_ids", "gene_tokens", "genes"}
