import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_adata  # noqa: E402

from stformer.demo import pbmc68k_counts  # noqa: E402


@pytest.fixture(scope="session")
def pbmc_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("pbmc") / "pbmc.h5ad"
    pbmc68k_counts().write_h5ad(path)
    return path


@pytest.fixture
def tissue(tmp_path):
    """Two-sample synthetic tissue written as h5ad; returns (adata, path)."""
    adata = make_adata(240, 150, expressed=40, n_samples=2, seed=3)
    path = tmp_path / "tissue.h5ad"
    adata.write_h5ad(path)
    return adata, path


@pytest.fixture(scope="session")
def token_dataset(tmp_path_factory):
    """A small tokenized dataset (with lengths.pkl and vocab.json) from synthetic counts."""
    from stformer import build_token_dictionary, compute_gene_medians, tokenize_data

    root = tmp_path_factory.mktemp("tokens")
    adata = make_adata(160, 60, expressed=25, seed=11)
    adata.write_h5ad(root / "cells.h5ad")
    medians = compute_gene_medians(root / "cells.h5ad", method="exact", progress=False)
    vocab = build_token_dictionary(medians)
    tokenize_data(
        root / "cells.h5ad",
        root / "tokens",
        medians,
        vocab,
        max_length=32,
        metadata_columns=["cell_type", "sample"],
        progress=False,
    )
    return root / "tokens"


TINY_MODEL = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="session")
def pretrained(token_dataset, tmp_path_factory):
    """A tiny pretrained model folder (safetensors, config, tokenizer, vocab.json)."""
    from stformer.pretrain import pretrain

    out = tmp_path_factory.mktemp("pretrained")
    pretrain(token_dataset, out, epochs=2, batch_size=8, logging_steps=50, bf16=False, **TINY_MODEL)
    return out / "pretrain" / "model"
