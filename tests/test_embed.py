import anndata as ad
import numpy as np
import pytest
import torch
from datasets import load_from_disk
from launch import two_processes
from transformers import BertModel

from stformer import embed, read_embeddings, write_embeddings
from stformer._warnings import StformerWarning
from stformer.cli import main


def test_cell_embeddings_are_batch_size_invariant_and_mean_pooled(pretrained, token_dataset):
    small = embed(pretrained, token_dataset, batch_size=1, bf16=False, progress=False)
    big = embed(pretrained, token_dataset, batch_size=64, genes=True, bf16=False, progress=False)
    assert small["cells"].shape == (160, 32)
    np.testing.assert_allclose(small["cells"], big["cells"], atol=1e-5)
    assert list(big["cell_ids"]) == load_from_disk(str(token_dataset))["cell_id"]
    # computed apart: each cell alone through the encoder (no padding), its last hidden states averaged
    encoder = BertModel.from_pretrained(str(pretrained), add_pooling_layer=False).eval()
    data = load_from_disk(str(token_dataset))
    states = []
    with torch.no_grad():
        for ids in data["input_ids"]:
            states.append(encoder(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy())
    np.testing.assert_allclose(big["cells"], np.stack([s.mean(0) for s in states]), atol=1e-4)
    gene = big["gene_tokens"][3]  # a gene's embedding: its hidden state averaged over the cells expressing it
    expected = np.mean([s[ids.index(gene)] for s, ids in zip(states, data["input_ids"], strict=True) if gene in ids], 0)
    np.testing.assert_allclose(big["genes"][3], expected, atol=1e-4)
    first_layer = embed(pretrained, token_dataset, hidden_layer=0, bf16=False, progress=False)
    assert not np.allclose(first_layer["cells"], big["cells"])
    with pytest.raises(ValueError, match="hidden_layer must lie in"):
        embed(pretrained, token_dataset, hidden_layer=9, progress=False)
    with pytest.warns(StformerWarning, match="'layer' is deprecated.*hidden_layer"):  # the old name still works
        old = embed(pretrained, token_dataset, layer=0, bf16=False, progress=False)
    np.testing.assert_array_equal(old["cells"], first_layer["cells"])


def test_bf16_embeddings_point_where_fp32_ones_do(pretrained, token_dataset):
    exact = embed(pretrained, token_dataset, bf16=False, device="cpu", progress=False)["cells"]
    fast = embed(pretrained, token_dataset, bf16=True, progress=False)["cells"]  # stformer's CPU kernels here
    assert not np.array_equal(fast, exact)  # bf16 did run
    cosine = (fast * exact).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosine.min() > 0.99
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but no CUDA device is visible"):
            embed(pretrained, token_dataset, device="cuda", progress=False)


def test_write_embeddings_into_anndata_copy(pretrained, token_dataset, tmp_path):
    source = token_dataset.parent / "cells.h5ad"
    result = embed(pretrained, token_dataset, progress=False)
    write_embeddings(result, tmp_path / "emb", h5ad=source, h5ad_out=tmp_path / "with.h5ad")
    adata, original = ad.read_h5ad(tmp_path / "with.h5ad"), ad.read_h5ad(source)
    assert adata.obsm["X_stformer"].shape == (adata.n_obs, 32)
    row = list(adata.obs_names).index(load_from_disk(str(token_dataset))["obs_name"][5])
    np.testing.assert_allclose(adata.obsm["X_stformer"][row], result["cells"][5])
    assert (adata.X != original.X).nnz == 0 and adata.obs.equals(original.obs)  # the rest of the file as it was
    assert "X_stformer" not in original.obsm  # the input is left as it was
    saved = np.load(tmp_path / "emb" / "cells.npy")
    np.testing.assert_array_equal(saved, result["cells"])


def test_embeddings_written_to_a_folder_equal_those_in_memory(pretrained, token_dataset, tmp_path):
    in_memory = embed(pretrained, token_dataset, genes=True, bf16=False, progress=False)
    on_disk = embed(pretrained, token_dataset, genes=True, bf16=False, out=tmp_path / "emb", progress=False)
    assert isinstance(on_disk["cells"], np.memmap)
    for name in ("cells", "cell_ids", "gene_tokens", "genes"):
        np.testing.assert_array_equal(on_disk[name], in_memory[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]  # no partial folder left
    with pytest.raises(FileExistsError, match="emb already exists"):
        embed(pretrained, token_dataset, out=tmp_path / "emb", progress=False)


@pytest.mark.slow
def test_two_processes_share_the_batches_and_write_one_result(pretrained, token_dataset, tmp_path):
    args = ["embed", str(token_dataset), "--model", str(pretrained), "--genes", "--bf16", "false", "--batch-size", "16"]
    assert main([*args, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    two_processes("-m", "stformer.cli", *args, "--out", str(tmp_path / "two"), "--quiet")
    one, two = read_embeddings(tmp_path / "one"), read_embeddings(tmp_path / "two")
    assert sorted(one) == sorted(two) == ["cell_ids", "cells", "gene_tokens", "genes"]
    for name in ("cell_ids", "gene_tokens"):
        np.testing.assert_array_equal(two[name], one[name])
    for name in ("cells", "genes"):  # each cell in a batch of its own rank: batch-invariant up to rounding
        np.testing.assert_allclose(two[name], one[name], atol=1e-5)


def test_embed_cli(pretrained, token_dataset, tmp_path):
    assert (
        main(
            [
                "embed",
                str(token_dataset),
                "--model",
                str(pretrained),
                "--out",
                str(tmp_path / "e"),
                "--genes",
                "--quiet",
            ]
        )
        == 0
    )
    assert {f.name for f in (tmp_path / "e").iterdir()} == {"cells.npy", "cell_ids.npy", "gene_tokens.npy", "genes.npy"}


def test_two_files_sharing_barcodes_keep_their_own_embeddings(pretrained, tmp_path):
    """Slides reuse barcodes: each cell's embedding goes back to its own file's row."""
    from synthetic import make_adata

    from stformer import load_token_dictionary, tokenize_data

    vocab = load_token_dictionary(pretrained / "vocab.json")
    medians = {g: 1.0 for g in vocab if not g.startswith("<")}
    for name, seed in (("a", 1), ("b", 2)):
        make_adata(30, 60, expressed=20, seed=seed).write_h5ad(
            tmp_path / f"{name}.h5ad"
        )  # obs names cell0..cell29 in both
    tokenize_data([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], tmp_path / "tokens", medians, vocab, progress=False)
    data = load_from_disk(str(tmp_path / "tokens"))
    assert len(set(data["cell_id"])) == len(data) == 60 and data["cell_id"][30] == "b:cell0"
    assert data["obs_name"][:3] == data["obs_name"][30:33] == ["cell0", "cell1", "cell2"]
    result = embed(pretrained, tmp_path / "tokens", progress=False)
    write_embeddings(result, tmp_path / "e", h5ad=tmp_path / "b.h5ad")
    adata = ad.read_h5ad(tmp_path / "b_stformer.h5ad")
    np.testing.assert_array_equal(adata.obsm["X_stformer"], result["cells"][30:])
    assert not np.allclose(adata.obsm["X_stformer"][0], result["cells"][0])  # not file a's cell0
    ad.AnnData(adata.X, obs=adata.obs).write_h5ad(tmp_path / "renamed.h5ad")
    with pytest.raises(ValueError, match="renamed.h5ad: none of its cells are in the embeddings.*'a', 'b'"):
        write_embeddings(result, None, h5ad=tmp_path / "renamed.h5ad")
