"""In silico deletion: stformer's batched screen against a plain implementation of Geneformer's scheme.

Both compute the same measure (the cosine similarity of each perturbed cell to its original,
over the genes both share, matched by token) with one randomly initialized model of the default
pretraining shape (6 layers, hidden 256, 4 heads, FFN 512, vocabulary 20,000, 2,048 positions;
speed does not depend on the weights) on the same cells and the same deletions:

- Geneformer's scheme, written plainly here: one cell at a time, its original and its perturbed
  copies padded to the model's 2,048 positions, fp32, batches of 100;
- stformer: ``perturbation_shifts`` (many cells' copies per pass, sorted by length and cut to
  the longest of each batch, bf16 and stformer's CPU kernels where the CPU is fast at bf16).

Cells: ``--cells`` synthetic cells of 500-2,048 genes (uniform). A genome-wide screen of 100 such
cells is ~127,000 deletions (hours for the plain scheme on 2 cores), so each cell's deletions are
a seeded sample of ``--genes-per-cell`` of its genes; perturbations/s is per deletion, originals
included in the time. Each scheme runs in its own process (peak = that process's resident peak).

    python benchmarks/bench_perturb.py [--cells 100] [--genes-per-cell 2]
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

WIDTH, VOCAB = 2048, 20_000


def _model():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=WIDTH,
        hidden_act="relu",
    )
    return BertModel(config, add_pooling_layer=False).eval()


def _workload(n_cells: int, per_cell: int):
    rng = np.random.default_rng(0)
    cells = [rng.choice(np.arange(2, VOCAB), rng.integers(500, WIDTH + 1), replace=False) for _ in range(n_cells)]
    genes = [rng.choice(cell, per_cell, replace=False) for cell in cells]
    return cells, genes


def geneformer_scheme(model, cells, genes, batch_size: int = 100) -> np.ndarray:
    """Per cell: original and perturbed copies padded to 2,048 positions, fp32; similarity over shared genes."""
    import torch

    from stformer._datasets import pad_right

    def states(sequences):  # (batch, 2048, hidden) float32
        ids, mask = pad_right(sequences, 0, width=WIDTH)
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

    out = []
    for cell, deleted in zip(cells, genes, strict=True):
        original = states([cell])[0]  # (2048, hidden)
        for lo in range(0, len(deleted), batch_size):
            copies = [cell[cell != g] for g in deleted[lo : lo + batch_size]]
            perturbed = states(copies)
            for row, g in enumerate(deleted[lo : lo + batch_size]):
                keep = np.flatnonzero(cell != g)  # the shared genes, in the same order on both sides
                before = original[torch.as_tensor(keep)].mean(0)
                after = perturbed[row, : len(keep)].mean(0)
                out.append(float(torch.nn.functional.cosine_similarity(before, after, dim=0)))
    return np.asarray(out)


def stformer_scheme(model, cells, genes) -> np.ndarray:
    from stformer._hardware import bf16_is_fast
    from stformer._kernels import use_fast_kernels
    from stformer.perturbation import Perturbation, perturbation_shifts

    perturbations = [Perturbation(c, (int(g),)) for c, chosen in enumerate(genes) for g in chosen]
    shifts = perturbation_shifts(use_fast_kernels(model), cells, perturbations, "delete", bf16=bf16_is_fast("cpu"))
    return shifts["cosine_similarity"]


def _child(scheme: str, n_cells: int, per_cell: int, out: Path) -> None:
    model = _model()
    cells, genes = _workload(n_cells, per_cell)
    start = time.perf_counter()
    similarity = (geneformer_scheme if scheme == "geneformer" else stformer_scheme)(model, cells, genes)
    seconds = time.perf_counter() - start
    np.save(out, similarity)
    print(json.dumps({"seconds": seconds, "perturbations": len(similarity), "peak_gb": peak_rss_kb() / 1e6}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=100)
    p.add_argument("--genes-per-cell", type=int, default=2)
    p.add_argument("--child", choices=["geneformer", "stformer"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child, a.cells, a.genes_per_cell, a.out)
        return
    cells, _ = _workload(a.cells, a.genes_per_cell)
    lengths = [len(c) for c in cells]
    print(
        f"Deleting {a.genes_per_cell} genes in each of {a.cells} cells of {min(lengths)}-{max(lengths)} genes "
        f"(mean {np.mean(lengths):.0f}); model 6 x 256, vocabulary {VOCAB:,}; CPU: {cpu()}"
    )
    print(f"{'scheme':<58} {'seconds':>8} {'perturb./s':>10} {'peak GB':>8}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme, label in (
            ("geneformer", "Geneformer's scheme (per cell, padded to 2,048, fp32, 100)"),
            ("stformer", "stformer (batched across cells, cut to length, bf16/fast)"),
        ):
            out = Path(tmp) / f"{scheme}.npy"
            args = ["--child", scheme, "--cells", str(a.cells), "--genes-per-cell", str(a.genes_per_cell)]
            proc = subprocess.run([sys.executable, __file__, *args, "--out", str(out)], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-2000:])
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            results[scheme] = (figures, np.load(out))
            rate = figures["perturbations"] / figures["seconds"]
            print(f"{label:<58} {figures['seconds']:>8.1f} {rate:>10.2f} {figures['peak_gb']:>8.2f}", flush=True)
    (slow, slow_sim), (fast, fast_sim) = results["geneformer"], results["stformer"]
    speedup = slow["seconds"] / fast["seconds"]
    dissimilarity = 1 - slow_sim
    print(
        f"speed-up {speedup:.1f}x; 1 - similarity: max |difference| {np.abs(fast_sim - slow_sim).max():.2e} "
        f"(values {dissimilarity.min():.2e}-{dissimilarity.max():.2e}), Spearman "
        f"{_spearman(1 - fast_sim, dissimilarity):.3f}"
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


if __name__ == "__main__":
    main()
