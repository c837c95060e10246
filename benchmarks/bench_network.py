"""Gene networks from attention: stformer's ``network`` against the original stFormer's ``GeneRegulatoryNetwork``.

Both read the same token dataset with the same model: a randomly initialized model of the
default shape (``PretrainConfig``: 6 layers, hidden 256, 4 heads, FFN 512, 2,048 positions;
speed does not depend on the weights), written by stformer as a model folder with its tokenizer.
Cells: ``--cells`` synthetic cells whose numbers of expressed genes are evenly spaced from
``--min-genes`` to ``--max-genes``, tokenized by stformer from an h5ad (which stformer's
co-expression baseline reads).

- stformer: ``stformer.network(model, tokens, out, max_cells=None)`` with its defaults (1,000 genes,
  every layer and head, batches of 16 cut to their longest cell, bf16 where the CPU is fast at it),
  the co-expression baseline, the tables and the figure included in the time.
- Reference: PyPI ``stformer`` 0.1.3a0 (``stFormer.network_dynamics.gene_regulatory_network``), run
  in its own environment (``../shared/tools/reference-env.sh``) as its docstring shows:
  ``GeneRegulatoryNetwork(model_dir, dataset_path, model_type="Pretrained", device="cpu")``
  (its defaults: batches of 16, 4 loader workers; every cell padded to the longest of the dataset;
  the model in fp16; ``output_attentions``), ``compute_attention()``, ``build_graph(percentile=99)``,
  ``save_edge_list``. It averages attention over cells by *position* (position 5 of one cell and of
  another are different genes), then maps positions to genes through each token's position counts:
  a different quantity from stformer's, so only speed and memory are compared.

Each runs in its own process (peak = its resident peak).

    python benchmarks/bench_network.py [--cells 32] [--min-genes 500] [--max-genes 2048] [--reference-python PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu
from _memory import peak_rss_kb

N_GENES, WIDTH = 6000, 2048


def _prepare(root: Path, n_cells: int, low: int, high: int) -> tuple[Path, Path]:
    """An h5ad of cells with evenly spaced numbers of genes, its tokens, and a random model of the default shape."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from stformer import build_token_dictionary, compute_gene_medians, tokenize_data
    from stformer.checkpoints import save_model_folder
    from stformer.pretrain.model import BertForMaskedGenes
    from stformer.settings import PretrainConfig

    rng = np.random.default_rng(0)
    rows = []
    for n in np.linspace(low, high, n_cells).round().astype(int):
        row = np.zeros(N_GENES, dtype=np.float32)
        row[rng.choice(N_GENES, n, replace=False)] = rng.negative_binomial(2, 0.3, n) + 1
        rows.append(row)
    names = [f"ENSG{i:011d}" for i in range(N_GENES)]
    cells = ad.AnnData(sp.csr_matrix(np.stack(rows)), var=pd.DataFrame(index=names))
    cells.obs_names = [f"cell{i}" for i in range(n_cells)]
    cells.write_h5ad(root / "cells.h5ad")
    medians = compute_gene_medians(root / "cells.h5ad", method="exact", progress=False)
    vocab = build_token_dictionary(medians)
    tokenize_data(root / "cells.h5ad", root / "tokens", medians, vocab, max_length=WIDTH, progress=False)
    shape = PretrainConfig()
    import torch
    from transformers import BertConfig

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        intermediate_size=shape.intermediate_size,
        hidden_act=shape.activation,
        max_position_embeddings=WIDTH,
        pad_token_id=vocab["<pad>"],
    )
    save_model_folder(BertForMaskedGenes(config), root / "model", vocab)
    return root / "tokens", root / "model"


def _stformer(tokens: Path, model: Path, out: Path) -> dict:
    from stformer import network

    start = time.perf_counter()
    edges = network(model, tokens, out, max_cells=None, min_cells=3, progress=False)
    return {
        "seconds": time.perf_counter() - start,
        "edges": len(edges),
        "genes": json.loads((out / "settings.json").read_text())["genes"],
    }


def _reference(tokens: Path, model: Path, out: Path) -> dict:
    import shutil

    from stFormer.network_dynamics.gene_regulatory_network import GeneRegulatoryNetwork

    # the tokenizer that transformers 5 wrote names its class TokenizersBackend, which the reference's
    # transformers 4 calls PreTrainedTokenizerFast (the same tokenizer.json): a copy says so
    shutil.copytree(model, out / "model")
    settings = json.loads((out / "model" / "tokenizer_config.json").read_text())
    (out / "model" / "tokenizer_config.json").write_text(
        json.dumps({**settings, "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    model = out / "model"
    # the token dataset that datasets 4 wrote declares its lists as List, which the reference's datasets 3
    # does not know: the same Arrow table, saved again without that declaration
    import pyarrow as pa
    from datasets import Dataset

    with pa.memory_map(str(next(tokens.glob("data-*.arrow")))) as source:
        table = pa.ipc.open_stream(source).read_all().replace_schema_metadata(None)
    Dataset(table.select(["input_ids", "length"])).save_to_disk(str(out / "tokens"))
    tokens = out / "tokens"
    start = time.perf_counter()
    grn = GeneRegulatoryNetwork(model_dir=str(model), dataset_path=str(tokens), model_type="Pretrained", device="cpu")
    grn.compute_attention()
    grn.build_graph(percentile=99)
    grn.save_edge_list(str(out / "edges.csv"))
    return {
        "seconds": time.perf_counter() - start,
        "edges": grn.graph.number_of_edges(),
        "genes": grn.graph.number_of_nodes(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--min-genes", type=int, default=500)
    p.add_argument("--max-genes", type=int, default=2048)
    p.add_argument("--reference-python", default=str(Path(__file__).resolve().parents[2] / "reference-venv/bin/python"))
    p.add_argument("--child", choices=["stformer", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        out = a.root / f"out-{a.child}"
        out.mkdir(exist_ok=True)
        run = _stformer if a.child == "stformer" else _reference
        figures = run(a.root / "tokens", a.root / "model", out / "net" if a.child == "stformer" else out)
        print(json.dumps({**figures, "peak_gb": peak_rss_kb() / 1e6}))
        return
    print(
        f"Gene networks from {a.cells} cells of {a.min_genes}-{a.max_genes} genes; model 6 x 256, 4 heads; CPU: {cpu()}"
    )
    print(f"{'tool':<44} {'seconds':>8} {'cells/s':>8} {'peak GB':>8} {'stformer gain':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _prepare(root, a.cells, a.min_genes, a.max_genes)
        results = {}
        for tool, python in (("stformer", sys.executable), ("reference", a.reference_python)):
            proc = subprocess.run(
                [python, __file__, "--child", tool, "--root", str(root)], capture_output=True, text=True
            )
            if proc.returncode:
                sys.exit(f"{tool}: {proc.stderr[-3000:]}")
            figures = results[tool] = json.loads(proc.stdout.strip().splitlines()[-1])
            name = (
                "stformer network (by gene, co-expression incl.)"
                if tool == "stformer"
                else "stFormer 0.1.3a0 GeneRegulatoryNetwork"
            )
            gain = figures["seconds"] / results["stformer"]["seconds"]
            rate = a.cells / figures["seconds"]
            print(f"{name:<44} {figures['seconds']:>8.1f} {rate:>8.2f} {figures['peak_gb']:>8.2f} "
                  f"{gain:>12.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
