"""What does masked-gene pretraining learn? A run's pretrained model against simple predictors.

On the run classifier's held-out cells (``classify/eval.dataset``), 15% of each cell's genes are
masked (seeded); at each masked position every predictor picks one gene among those not visible
in the cell: the pretrained model (its masked-gene head), the most frequent gene at that rank in
the other cells, the gene whose mean rank in the other cells is closest, and the most frequent
gene overall. Prints the accuracy of each on the same positions.

    python benchmarks/mlm_baselines.py demo_output/run --model demo_output/run/pretrain/pbmc/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _machine import cpu
from datasets import load_from_disk

from stformer.pretrain.model import BertForMaskedGenes
from stformer.vocab import special_token_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a stformer run folder (tokens/, classify/eval.dataset)")
    p.add_argument("--model", required=True, help="the pretrained model folder")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    tokens = load_from_disk(f"{a.run}/tokens")
    held_out = set(load_from_disk(f"{a.run}/classify/eval.dataset")["cell_id"])
    vocab = json.loads(Path(a.run, "vocab.json").read_text())
    mask_id, specials = vocab["<mask>"], special_token_ids(vocab)
    cells = [(np.asarray(x), c in held_out) for x, c in zip(tokens["input_ids"], tokens["cell_id"], strict=True)]
    longest, size = max(len(x) for x, _ in cells), len(vocab)
    at_rank, rank_sum, count = np.zeros((longest, size)), np.zeros(size), np.zeros(size)
    for x, held in cells:
        if not held:
            at_rank[np.arange(len(x)), x] += 1
            rank_sum[x] += np.arange(len(x))
            count[x] += 1
    mean_rank = np.where(count > 0, rank_sum / np.maximum(count, 1), np.inf)
    model = BertForMaskedGenes.from_pretrained(a.model).eval()
    rng = np.random.default_rng(a.seed)
    names = ("pretrained model", "most frequent gene at the rank", "closest mean rank", "most frequent gene")
    hits, total = dict.fromkeys(names, 0), 0
    for x, held in cells:
        if not held:
            continue
        masked = rng.choice(len(x), max(1, round(0.15 * len(x))), replace=False)
        hidden = np.union1d(np.setdiff1d(x, x[masked]), specials)  # genes visible in the cell, and specials
        inputs = x.copy()
        inputs[masked] = mask_id
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(inputs)[None]).logits[0].numpy()  # (seq, vocab)
        for position in masked:
            scores = {
                names[0]: logits[position].copy(),
                names[1]: at_rank[position].copy(),
                names[2]: -np.abs(mean_rank - position) + 1e-9 * count,  # ties: the more frequent gene
                names[3]: count.copy(),
            }
            for name, score in scores.items():
                score[hidden] = -np.inf
                hits[name] += int(score.argmax() == x[position])
            total += 1
    print(f"{sum(h for _, h in cells)} held-out cells, {total} masked positions (15%, seed {a.seed}); CPU: {cpu()}")
    for name in names:
        print(f"{name:>32} {hits[name] / total:.4f}")


if __name__ == "__main__":
    main()
