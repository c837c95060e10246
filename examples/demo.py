"""End-to-end demo on real PBMC data shipped inside scanpy (no network).

raw counts h5ad -> gene medians -> vocabulary -> token dataset -> pretraining (small BERT)
-> cell-type classifier (bulk_labels, stratified 20% held out) -> evaluation next to a
logistic-regression baseline on the same split -> cell embeddings (obsm["X_stformer"] of a copy
of the input h5ad). Run with ``make demo``; it prints a summary and
writes everything under ``demo_output/``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from stformer import GenericClassifier, embed, write_embeddings
from stformer.cli import main as stformer
from stformer.demo import pbmc68k_counts
from stformer.pretrain import pretrain

MODEL = {"num_layers": 4, "hidden_size": 128, "num_heads": 4, "intermediate_size": 256}


def timed(name: str, times: dict):
    class Timer:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            times[name] = time.perf_counter() - self.start
            print(f"[demo] {name}: {times[name]:.1f} s", flush=True)

    return Timer()


def logistic_baseline(counts, cell_ids, train_ids, test_ids, labels) -> float:
    """Macro-F1 of logistic regression on log1p(CP10k) expression, same split as the model."""
    index = {c: i for i, c in enumerate(cell_ids)}
    x = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    train, test = [index[c] for c in train_ids], [index[c] for c in test_ids]
    model = LogisticRegression(max_iter=2000).fit(x[train], labels[train])
    return float(f1_score(labels[test], model.predict(x[test]), average="macro"))


def run(out: Path, pretrain_epochs: float, finetune_epochs: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    adata = pbmc68k_counts()
    h5ad = out / "pbmc68k_counts.h5ad"
    adata.write_h5ad(h5ad)
    for stage, args in [
        ("medians", ["medians", str(h5ad), "--out", str(out / "medians.json")]),
        ("vocabulary", ["vocab", "--medians", str(out / "medians.json"), "--out", str(out / "vocab.json")]),
        (
            "tokenize",
            [
                "tokenize",
                str(h5ad),
                "--medians",
                str(out / "medians.json"),
                "--vocab",
                str(out / "vocab.json"),
                "--out",
                str(out / "tokens"),
                "--column",
                "bulk_labels=cell_type",
            ],
        ),
    ]:
        with timed(stage, times):
            if stformer([*args, "--overwrite"]) != 0:
                raise SystemExit(f"stage {stage} failed")

    with timed("pretrain", times):
        summary = pretrain(
            out / "tokens",
            out / "runs",
            run_name="pbmc",
            epochs=pretrain_epochs,
            learning_rate=1e-3,
            eval_fraction=0.1,
            logging_steps=50,
            save_steps=10_000,
            resume=True,
            **MODEL,
        )
    model_dir = Path(summary["model_dir"])

    classifier = GenericClassifier(
        "cell_type",
        training_args={
            "num_train_epochs": finetune_epochs,
            "learning_rate": 1e-3,
            "logging_steps": 50,
            "per_device_train_batch_size": 16,
            "disable_tqdm": True,
        },
        pooling="mean",
    )
    with timed("fine-tune", times):
        data_path, label_path = classifier.prepare_data(str(out / "tokens"), str(out / "classify"), "pbmc")
        classifier.train(str(model_dir), data_path, str(out / "classify"), test_size=0.2)
    metrics = json.loads((out / "classify" / "eval_metrics.json").read_text())
    with timed("embed", times):
        embeddings = embed(model_dir, out / "tokens", progress=False)
        write_embeddings(
            embeddings,
            out / "cell_embeddings.npz",
            h5ad=h5ad,
            overwrite=True,
            h5ad_out=out / "pbmc68k_counts_stformer.h5ad",
        )

    evaluation = load_from_disk(str(out / "classify" / "eval.dataset"))
    everything = load_from_disk(data_path)
    test_ids = set(evaluation["cell_id"])
    train_ids = [c for c in everything["cell_id"] if c not in test_ids]
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    baseline = logistic_baseline(adata.X.toarray(), list(adata.obs_names), train_ids, evaluation["cell_id"], labels)
    report = {
        "cells": adata.n_obs,
        "held_out_cells": len(evaluation),
        "pretrain_eval_loss": summary.get("eval_loss"),
        "stformer_macro_f1": metrics["macro_f1"],
        "stformer_accuracy": metrics["accuracy"],
        "logistic_regression_macro_f1": baseline,
        "seconds": times,
    }
    (out / "demo_summary.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--pretrain-epochs", type=float, default=15)
    parser.add_argument("--finetune-epochs", type=float, default=10)
    a = parser.parse_args()
    run(a.out, a.pretrain_epochs, a.finetune_epochs)
