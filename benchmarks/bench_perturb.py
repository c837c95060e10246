"""Genome-wide in silico deletion: stformer's batched screen against what Geneformer's own code does.

Both screen every expressed gene of the same cells with one randomly initialized model of
Geneformer V1's shape (6 layers, hidden 256, 4 heads, FFN 512, ReLU, vocabulary 25,426, 2,048
positions; speed does not depend on the weights) and report Geneformer's measure without cell
states: for each deletion, the mean over the remaining genes of each gene's cosine similarity
before and after, at Geneformer's default ``emb_layer=-1`` (the second-to-last layer).

The baseline follows Geneformer's code (``geneformer/`` of ctheodoris/Geneformer, as in the
copy at bicklab/geneformer 15a0804), step by step:

- ``perturber_utils.load_model("Pretrained", ...)``: ``BertForMaskedLM``, so every forward pass
  also computes the masked-LM head (dense + LayerNorm + decoder to the whole vocabulary) at
  every position, which the perturber never reads;
- ``in_silico_perturber.InSilicoPerturber.isp_perturb_all``: one cell at a time; the original
  through ``emb_extractor.get_embs``; ``perturber_utils.make_perturbation_batch`` +
  ``delete_indices`` make one copy per gene, each of length n - 1;
  ``forward_batch_size`` = 100 copies per pass;
- ``emb_extractor.get_embs``: each minibatch padded to its own longest sequence (all n - 1:
  no padding), with ``gen_attention_mask``; fp32; ``hidden_states[layer_to_quant]`` with
  ``layer_to_quant = quant_layers(model) + emb_layer``;
- ``perturber_utils.make_comparison_batch``: the original's states without the deleted
  position; ``quant_cos_sims(..., emb_mode="gene")``: per-gene cosines;
  ``torch.mean(gene_cos_sims, dim=1)``: the cell's value.

One departure, memory only: the head's logits of 100 copies of 2,047 genes are 20.8 GB in fp32,
more than this machine holds, so the baseline computes the head on 10 copies at a time (the
same FLOPs; on a GPU Geneformer holds all 100). A second baseline row runs the same scheme
without the head (``BertModel``), so the gain splits into arithmetic saved (the head) and
stformer's batching, bf16 and kernels. stformer: ``perturbation_shifts(..., layer=-2,
similarity="genes")`` (many cells' copies per pass, sorted by length and cut to the longest of
each pass, bf16 and stformer's CPU kernels where the CPU is fast at bf16, no head).

Cells: ``--cells`` synthetic cells with lengths evenly spaced from ``--min-genes`` to
``--max-genes``; every gene of each is deleted (n passes of n - 1 genes per cell), originals
included in the time. Each scheme runs in its own process (peak = its resident peak).

    python benchmarks/bench_perturb.py [--cells 4] [--min-genes 500] [--max-genes 2048]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu
from _memory import peak_rss_kb

WIDTH, VOCAB, LAYERS = 2048, 25_426, 6
HEAD_PIECE = 10  # copies whose head logits are held at once (memory only; see the docstring)


def _model():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=WIDTH,
        hidden_act="relu",
    )
    return BertForMaskedLM(config).eval()


def _cells(n_cells: int, low: int, high: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = np.linspace(low, high, n_cells).round().astype(int)
    return [rng.choice(np.arange(2, VOCAB), n, replace=False) for n in lengths]


def geneformer_scheme(model, cells, *, head: bool, batch_size: int = 100, emb_layer: int = -1) -> np.ndarray:
    """Geneformer's isp_perturb_all for a genome-wide deletion without cell states (module docstring)."""
    import torch

    layer_to_quant = LAYERS + emb_layer  # quant_layers(model) + emb_layer

    def get_embs(sequences):  # (batch, n, hidden): emb_extractor.get_embs on one minibatch
        ids = torch.as_tensor(np.stack(sequences))  # equal lengths: padded to the longest = no padding
        mask = torch.ones_like(ids)  # gen_attention_mask
        with torch.no_grad():
            out = model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            if head:  # BertForMaskedLM's forward: prediction scores at every position
                for lo in range(0, len(ids), HEAD_PIECE):
                    model.cls(out.last_hidden_state[lo : lo + HEAD_PIECE])
        return out.hidden_states[layer_to_quant]

    values = []
    for cell in cells:
        original = get_embs([cell])[0]  # (n, hidden)
        copies = [np.delete(cell, i) for i in range(len(cell))]  # make_perturbation_batch + delete_indices
        for lo in range(0, len(copies), batch_size):
            perturbed = get_embs(copies[lo : lo + batch_size])  # (b, n - 1, hidden)
            keep = [np.delete(np.arange(len(cell)), i) for i in range(lo, lo + len(perturbed))]
            comparison = original[torch.as_tensor(np.stack(keep))]  # make_comparison_batch: (b, n - 1, hidden)
            gene_cos_sims = torch.nn.functional.cosine_similarity(perturbed, comparison, dim=2)  # quant_cos_sims
            values.append(torch.mean(gene_cos_sims, dim=1).numpy())  # (b,)
    return np.concatenate(values)


def stformer_scheme(model, cells) -> np.ndarray:
    from stformer._hardware import bf16_is_fast
    from stformer._kernels import use_fast_kernels
    from stformer.perturbation import Perturbation, perturbation_shifts

    perturbations = [Perturbation(c, (int(g),)) for c, cell in enumerate(cells) for g in cell]
    shifts = perturbation_shifts(
        use_fast_kernels(model.bert), cells, perturbations, "delete", layer=-2, similarity="genes",
        bf16=bf16_is_fast("cpu"),
    )  # fmt: skip
    return shifts["cosine_similarity"]


def _child(scheme: str, a, out: Path) -> None:
    model = _model()
    cells = _cells(a.cells, a.min_genes, a.max_genes)
    start = time.perf_counter()
    if scheme == "stformer":
        similarity = stformer_scheme(model, cells)
    else:
        similarity = geneformer_scheme(model, cells, head=scheme == "geneformer")
    seconds = time.perf_counter() - start
    np.save(out, similarity)
    print(json.dumps({"seconds": seconds, "perturbations": len(similarity), "peak_gb": peak_rss_kb() / 1e6}))


SCHEMES = {
    "geneformer": "Geneformer's code (per cell, BertForMaskedLM, fp32, 100)",
    "geneformer-no-head": "the same without the masked-LM head",
    "stformer": "stformer (batched across cells, bf16/kernels)",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--min-genes", type=int, default=500)
    p.add_argument("--max-genes", type=int, default=2048)
    p.add_argument("--child", choices=list(SCHEMES), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child, a, a.out)
        return
    lengths = [len(c) for c in _cells(a.cells, a.min_genes, a.max_genes)]
    print(
        f"Genome-wide deletion in {a.cells} cells of {', '.join(map(str, lengths))} genes "
        f"({sum(lengths):,} deletions); model 6 x 256, vocabulary {VOCAB:,}; CPU: {cpu()}"
    )
    print(f"{'scheme':<58} {'seconds':>8} {'deletions/s':>11} {'peak GB':>8} {'stformer gain':>13}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in ("stformer", "geneformer-no-head", "geneformer"):
            out = Path(tmp) / f"{scheme}.npy"
            args = ["--child", scheme, "--cells", str(a.cells), "--min-genes", str(a.min_genes)]
            args += ["--max-genes", str(a.max_genes), "--out", str(out)]
            proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-2000:])
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            results[scheme] = (figures, np.load(out))
            rate = figures["perturbations"] / figures["seconds"]
            gain = figures["seconds"] / results["stformer"][0]["seconds"]
            print(f"{SCHEMES[scheme]:<58} {figures['seconds']:>8.1f} {rate:>11.2f} {figures['peak_gb']:>8.2f} "
                  f"{gain:>12.2f}x", flush=True)  # fmt: skip
    ours, theirs = results["stformer"][1], results["geneformer"][1]
    print(
        f"the same values: max |difference| {np.abs(ours - theirs).max():.2e} "
        f"(1 - similarity {1 - theirs.max():.2e}-{1 - theirs.min():.2e}), Spearman {_spearman(ours, theirs):.4f}"
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


if __name__ == "__main__":
    main()
