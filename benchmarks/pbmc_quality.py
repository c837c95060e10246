"""Macro-F1 of cell-type fine-tuning over several stratified splits, next to logistic regression.

Uses the output of ``make demo`` (or any ``stformer run`` directory): its token dataset, its
pretrained model and its h5ad. For each seed, the classifier's automatic stratified split holds
out ``--test-size`` of the cells; logistic regression on log1p(CP10k) is fitted on the same
training cells and scored on the same held-out cells (the vocabulary's genes of the h5ad's X).
Prints one row per seed and the means.

    python benchmarks/pbmc_quality.py demo_output/run --seeds 0,1,2,42 \\
        --options '{"class_weights": true, "training_args": {"num_train_epochs": 20}}'
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from datasets import load_from_disk

from stformer import InputOptions, load_token_dictionary
from stformer.classify import GenericClassifier
from stformer.report import logistic_baseline

p = argparse.ArgumentParser()
p.add_argument("run", type=Path, help="a `stformer run` output directory (tokens/, pretrain/<name>/model)")
p.add_argument("--h5ad", type=Path, help="expression for the baseline (default: RUN/../pbmc68k_counts.h5ad)")
p.add_argument("--label", default="bulk_labels")
p.add_argument("--model", type=Path, help="pretrained model (default: the run's only pretrain/*/model)")
p.add_argument("--seeds", default="0,1,2,42")
p.add_argument("--test-size", type=float, default=0.2)
p.add_argument("--options", default="{}", help="GenericClassifier keyword arguments, as JSON")
a = p.parse_args()

model = a.model or next((a.run / "pretrain").glob("*/model"))
h5ad = a.h5ad or a.run.parent / "pbmc68k_counts.h5ad"
options = json.loads(a.options)
rows = []
with tempfile.TemporaryDirectory() as tmp:  # prepared data and one fine-tuned model per seed
    work = Path(tmp)
    data, _ = GenericClassifier(a.label).prepare_data(str(a.run / "tokens"), str(work), "cells")
    labeled = load_from_disk(data)
    cell_ids, labels = np.asarray(labeled["cell_id"]), np.asarray(labeled["label"])
    vocab = load_token_dictionary(a.run / "tokens" / "vocab.json")
    for seed in (int(s) for s in a.seeds.split(",")):
        out = work / f"seed{seed}"
        GenericClassifier(a.label, seed=seed, **options).train(str(model), data, str(out), test_size=a.test_size)
        metrics = json.loads((out / "eval_metrics.json").read_text())
        held = np.isin(cell_ids, load_from_disk(str(out / "eval.dataset"))["cell_id"])
        split = (cell_ids[~held], labels[~held]), (cell_ids[held], labels[held])
        baseline = logistic_baseline([str(h5ad)], InputOptions(), vocab, *split)["macro_f1"]
        rows.append((seed, metrics["macro_f1"], metrics["accuracy"], baseline))

print(f"\n{len(cell_ids)} cells, {a.test_size:.0%} held out per split; model {model}; options {options}")
print(f"{'seed':>6} {'macro-F1':>9} {'accuracy':>9} {'LR macro-F1':>12}")
for seed, f1, acc, lr in rows:
    print(f"{seed:>6} {f1:>9.3f} {acc:>9.3f} {lr:>12.3f}")
means = np.mean([r[1:] for r in rows], axis=0)
print(f"{'mean':>6} {means[0]:>9.3f} {means[1]:>9.3f} {means[2]:>12.3f}")
