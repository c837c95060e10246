"""Can a first-order estimate pick the genes worth screening exactly? Recall on the PBMC demo model.

The issue's "fast screen": rank every expressed gene of a cell by a first-order estimate of its
deletion's goal shift from one forward and one backward pass, then confirm the top K exactly.
This measures, per cell, the share of the exact screen's top 20 genes (by goal shift) that
fall within the estimate's top K, for two relaxations of deleting gene r:

- attention gate: an additive bias b_r on every attention score toward r (deleting r is
  b_r -> -inf); estimate = -dF/db_r at b = 0;
- identity gate: gene r's word embedding scaled by g_r (g_r = 0 leaves its position blank);
  estimate = -dF/dg_r at g = 1;

with F = cos(mean of the last layer over the cell's genes, mean embedding of the goal cells).
Needs the demo's output (``make demo``).

    python benchmarks/perturb_first_order.py [--run demo_output/run] [--cells 15]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import cpu
from datasets import load_from_disk
from transformers import BertModel

from stformer import perturb
from stformer.vocab import load_token_dictionary

START, GOAL, TOP = "CD14+ Monocyte", "Dendritic", 20


def first_order(model, sequence: torch.Tensor, goal: torch.Tensor) -> dict[str, np.ndarray]:
    """(n,) estimated goal shift of deleting each gene, per relaxation."""
    n, emb = len(sequence), model.embeddings
    bias = torch.zeros(n, requires_grad=True)
    hidden = model(input_ids=sequence[None], attention_mask=bias[None, None, None, :].expand(1, 1, n, n))
    torch.nn.functional.cosine_similarity(hidden.last_hidden_state[0].mean(0), goal, dim=0).backward()
    gate = torch.ones(n, 1, requires_grad=True)
    x = gate * emb.word_embeddings(sequence) + emb.position_embeddings.weight[:n] + emb.token_type_embeddings.weight[0]
    states = model.encoder(emb.LayerNorm(x)[None]).last_hidden_state[0]  # (n, hidden)
    torch.nn.functional.cosine_similarity(states.mean(0), goal, dim=0).backward()
    return {"attention gate": -bias.grad.numpy(), "identity gate": -gate.grad[:, 0].numpy()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("demo_output/run"))
    p.add_argument("--cells", type=int, default=15)
    a = p.parse_args()
    model_dir, tokens = a.run / "pretrain" / "pbmc" / "model", a.run / "tokens"
    with tempfile.TemporaryDirectory() as tmp:
        perturb(model_dir, tokens, Path(tmp) / "s", state_column="bulk_labels", start_state=START,
                goal_state=GOAL, max_cells=a.cells, null_draws=0, device="cpu", progress=False)  # fmt: skip
        exact = pd.read_parquet(Path(tmp) / "s" / "cells.parquet")
    names = {i: g for g, i in load_token_dictionary(model_dir / "vocab.json").items()}
    data = load_from_disk(str(tokens))
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False, attn_implementation="eager").eval()
    row_of = {c: i for i, c in enumerate(data["cell_id"])}
    with torch.no_grad():
        goal_cells = np.flatnonzero(np.asarray(data["bulk_labels"]) == GOAL)
        goal = torch.stack([model(input_ids=torch.as_tensor([ids])).last_hidden_state[0].mean(0)
                            for ids in data.select(goal_cells)["input_ids"]]).mean(0)  # fmt: skip
    ks = (20, 50, 100)
    recall: dict[str, list] = {}
    for cell, part in exact.groupby("cell_id"):
        sequence = torch.as_tensor(data[row_of[cell]]["input_ids"])
        truth = part.set_index("gene")["goal_shift"]
        top = set(truth.nlargest(TOP).index)
        for method, estimate in first_order(model, sequence, goal).items():
            ranked = pd.Series(estimate, index=[names[int(t)] for t in sequence])[truth.index]
            recall.setdefault(method, []).append([len(top & set(ranked.nlargest(k).index)) / TOP for k in ks])
    lengths = exact.groupby("cell_id").size()
    print(f"{len(lengths)} {START} cells of {lengths.min()}-{lengths.max()} genes, goal {GOAL}; CPU: {cpu()}")
    print(f"{'estimate':<16}" + "".join(f"{f'recall@{k}':>11}" for k in ks) + "   (share of the exact top 20)")
    for method, values in recall.items():
        print(f"{method:<16}" + "".join(f"{v:>11.2f}" for v in np.mean(values, axis=0)))


if __name__ == "__main__":
    main()
