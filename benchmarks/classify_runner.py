"""One fine-tuning + prediction throughput measurement under stformer's or the reference's environment.

Reads labeled synthetic cells from an .npz, saves them as a dataset with the installed ``datasets``,
fine-tunes the given checkpoint for one epoch through each package's classifier with its own
automatic 80/20 split, and prints one JSON line: cells per second of ``Trainer.train`` (training
split) and of ``Trainer.predict`` (held-out split), and peak memory. Used by ``bench_classify.py``;
the code here is ours, the reference package is only called.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import transformers
from _memory import peak_rss_kb
from datasets import Dataset

p = argparse.ArgumentParser()
p.add_argument("--impl", choices=["stformer", "reference"], required=True)
p.add_argument("--data", type=Path, required=True)
p.add_argument("--model", type=Path, required=True)
a = p.parse_args()

timings = {}
for name in ("train", "predict"):
    original = getattr(transformers.Trainer, name)

    def timed(self, *args, _original=original, _name=name, **kwargs):
        start = time.perf_counter()
        result = _original(self, *args, **kwargs)
        timings.setdefault(_name, time.perf_counter() - start)  # the first call: training / held-out predictions
        return result

    setattr(transformers.Trainer, name, timed)

data = np.load(a.data)
cells = np.split(data["tokens"], np.cumsum(data["lengths"])[:-1])
if a.impl == "reference":
    # Its tokenizer gives every cell 2,048 tokens (the expressed genes, then unexpressed ones), and
    # its cell collator stacks sequences without padding: emulate that format for the same cells.
    rng = np.random.default_rng(1)
    vocab_size = int(data["vocab_size"])
    width = min(2048, vocab_size - 2)
    cells = [
        np.concatenate([c, rng.choice(np.setdiff1d(np.arange(2, vocab_size), c), width - len(c), replace=False)])
        for c in cells
    ]
tmp = Path(tempfile.mkdtemp())
dataset = Dataset.from_dict(
    {
        "input_ids": [c.tolist() for c in cells],
        "length": data["lengths"].tolist(),
        "cell_type": [f"type{x}" for x in data["labels"]],
    }
)
args = {
    "num_train_epochs": 1,
    "learning_rate": 5e-5,
    "logging_steps": 10_000,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
}
if a.impl == "stformer":
    from stformer import GenericClassifier

    clf = GenericClassifier(  # no gene dropout: both packages train on every gene of every cell
        "cell_type", training_args={**args, "per_device_train_batch_size": 12}, forward_batch_size=24, gene_dropout=0
    )
    ds_path, _ = clf.prepare_data(dataset, str(tmp), "bench")
    clf.train(str(a.model), ds_path, str(tmp / "out"))
else:
    import torch
    from stFormer.classifier import classifier_utils
    from stFormer.classifier.Classifier import Classifier

    def stacking_call(self, features):
        """The reference collator with torch.tensor(list of tensors) replaced by torch.stack.

        As shipped it raises TypeError on every batch (datasets returns per-example tensors), so
        the reference cannot fine-tune a cell classifier at all; this is the smallest fix that
        lets its pipeline run unchanged otherwise.
        """
        return {
            "input_ids": torch.stack([torch.as_tensor(f["input_ids"]) for f in features]).long(),
            "labels": torch.stack([torch.as_tensor(f["label"]) for f in features]).long(),
        }

    classifier_utils.DataCollatorForCellClassification.__call__ = stacking_call

    clf = Classifier("cell_type", training_args=args, forward_batch_size=24, nproc=1)
    dataset.save_to_disk(str(tmp / "cells.dataset"))
    ds_path, _ = clf.prepare_data(str(tmp / "cells.dataset"), str(tmp), "bench")
    clf.train(str(a.model), ds_path, str(tmp / "out"))
n = len(dataset)
n_test = round(0.2 * n)
print(
    json.dumps(
        {
            "train_cells_per_s": (n - n_test) / timings["train"],
            "predict_cells_per_s": n_test / timings["predict"],
            "train_s": timings["train"],
            "predict_s": timings["predict"],
            "peak_gb": peak_rss_kb() / 1e6,
        }
    )
)
