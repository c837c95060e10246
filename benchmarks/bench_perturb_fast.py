"""Can a cheap first stage pick the genes a genome-wide deletion screen should compute exactly?

For each cell of ``--cells`` start-state cells, the exact screen deletes every expressed gene
(``perturbation_shifts``: goal shifts toward the goal state's mean embedding). The first stage
estimates every gene's goal shift from one forward and one backward pass (fp32, eager
attention), summing, as in AtP* (Kramar et al. 2024):

- per layer and head, the exact change of each query's attention output when key r is removed,
  ``-p_ir / (1 - p_ir) * (v_r - out_i)``, times the gradient of the goal cosine with respect to
  that output (the query r itself left out);
- the first-order effect of the genes below r moving up one position (their position embedding
  becomes the one above), from the gradient with respect to the input embeddings.

Printed: per shortlist size K, the share of each cell's exact top 20 genes (by goal shift) within
its top K estimates (recall), and the time of an exact screen against the two stages (the first
stage, then K + pool exact deletions, pool = K for the rank-matched nulls), all in this run.
Results (docs/guide/perturb.md): far below the 0.8 recall a shortlist would need, so stformer
offers no two-stage mode; this script stays to measure better first stages against.

    python benchmarks/bench_perturb_fast.py --model demo_output/run/classify/model \
        --tokens demo_output/run/tokens --state-column bulk_labels --start "CD14+ Monocyte" --goal Dendritic
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu
from datasets import load_from_disk
from transformers import BertModel

from stformer._hardware import bf16_is_fast
from stformer._kernels import use_fast_kernels
from stformer.perturbation import Perturbation, perturbation_shifts
from stformer.perturbation.engine import cell_embeddings

TOP = 20


def deletion_estimates(model, ids: torch.Tensor, goal: torch.Tensor, layer: int = -1) -> np.ndarray:
    """(n,) estimated goal shift of deleting each gene of ``ids`` (n,), from one forward and one backward pass."""
    n, heads = len(ids), model.config.num_attention_heads
    records: list = []

    def keep(module, inputs, output):  # BertSelfAttention -> (context (1, n, hidden), probabilities (1, heads, n, n))
        output[0].retain_grad()
        records.append(output)

    values: list = []
    hooks = [block.attention.self.register_forward_hook(keep) for block in model.encoder.layer]
    hooks += [
        block.attention.self.value.register_forward_hook(lambda m, i, o: values.append(o))
        for block in model.encoder.layer
    ]
    positions = model.embeddings.position_embeddings.weight[:n].detach()  # (n, hidden)
    words = model.embeddings.word_embeddings(ids).detach().requires_grad_()  # (n, hidden): x = words + positions + ...
    try:
        out = model(inputs_embeds=words[None], output_hidden_states=True)
        states = out.hidden_states[layer][0]  # (n, hidden)
        torch.nn.functional.cosine_similarity(states.mean(0), goal, dim=0).backward()
    finally:
        for hook in hooks:
            hook.remove()
    estimate = torch.zeros(n)
    with torch.no_grad():
        for (context, probabilities), value in zip(records, values, strict=True):
            split = lambda t: t[0].view(n, heads, -1).transpose(0, 1)  # noqa: E731 - (heads, n, head_dim)
            grad, ctx, v, p = split(context.grad), split(context), split(value), probabilities[0]
            weight = p / (1 - p).clamp_min(1e-6)  # (heads, n queries, n keys)
            weight = weight * (1 - torch.eye(n))  # the deleted gene's own query leaves with it
            direct = torch.einsum("hid,hrd->hir", grad, v)  # (heads, n, n): gradient at i . value of r
            own = (grad * ctx).sum(-1, keepdim=True)  # (heads, n, 1)
            estimate -= (weight * (direct - own)).sum((0, 1))  # over heads and queries -> (n,)
        moved = (words.grad[1:] * (positions[:-1] - positions[1:])).sum(-1)  # (n - 1,) gene j's move up, j >= 1
        suffix = torch.flip(torch.cumsum(torch.flip(moved, [0]), 0), [0])  # suffix[k] = sum of moved[k:]
        estimate += torch.cat([suffix, torch.zeros(1)])  # deleting r moves genes r + 1 ... up
    return estimate.numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--tokens", type=Path, required=True)
    p.add_argument("--state-column", required=True)
    p.add_argument("--start", required=True)
    p.add_argument("--goal", required=True)
    p.add_argument("--cells", type=int, default=10)
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--shortlists", type=int, nargs="+", default=[20, 50, 100, 200])
    a = p.parse_args()
    data = load_from_disk(str(a.tokens))
    states = np.asarray(data[a.state_column])
    rng = np.random.default_rng(0)
    start_rows = np.sort(rng.choice(np.flatnonzero(states == a.start), a.cells, replace=False))
    goal_rows = np.flatnonzero(states == a.goal)[:500]
    fast = use_fast_kernels(BertModel.from_pretrained(str(a.model), add_pooling_layer=False).eval())
    eager = BertModel.from_pretrained(str(a.model), add_pooling_layer=False, attn_implementation="eager").eval()
    bf16 = bf16_is_fast("cpu")
    goal = cell_embeddings(fast, [np.asarray(r) for r in data.select(goal_rows)["input_ids"]], layer=a.layer,
                           bf16=bf16).mean(0)  # fmt: skip
    cells = [np.asarray(r) for r in data.select(start_rows)["input_ids"]]
    exact_seconds = estimate_seconds = 0.0
    recalls, lengths = [], [len(c) for c in cells]
    for cell in cells:
        start = time.perf_counter()
        exact = perturbation_shifts(fast, [cell], [Perturbation(0, (int(g),)) for g in cell], "delete",
                                    layer=a.layer, goals={"goal": goal}, bf16=bf16)["goal"]  # fmt: skip
        exact_seconds += time.perf_counter() - start
        start = time.perf_counter()
        estimate = deletion_estimates(eager, torch.as_tensor(cell), torch.as_tensor(goal, dtype=torch.float32),
                                      a.layer)  # fmt: skip
        estimate_seconds += time.perf_counter() - start
        top = set(np.argsort(-exact)[:TOP])
        ranked = np.argsort(-estimate)
        recalls.append([len(top & set(ranked[:k])) / TOP for k in a.shortlists])
    per_gene = exact_seconds / sum(lengths)  # an exact deletion's share of the exact screen's time
    print(f"{len(cells)} {a.start} cells of {min(lengths)}-{max(lengths)} genes (mean {np.mean(lengths):.0f}), "
          f"goal {a.goal}, model {a.model}; CPU: {cpu()}")  # fmt: skip
    print(f"exact screen {exact_seconds:.1f} s; first stage {estimate_seconds:.1f} s")
    print(f"{'shortlist K':>11} {'recall of top 20':>16} {'two stages (s)':>14} {'speed-up':>8}")
    for k, recall in zip(a.shortlists, np.mean(recalls, axis=0), strict=True):
        two_stage = estimate_seconds + per_gene * sum(min(2 * k, n) for n in lengths)  # K + pool of K
        print(f"{k:>11} {recall:>16.2f} {two_stage:>14.1f} {exact_seconds / two_stage:>7.1f}x")


if __name__ == "__main__":
    main()
