"""Cell-classifier fine-tuning and prediction throughput (cells/s): stformer vs the reference.

Synthetic cells of 200-2,048 genes (uniform) with 5 balanced labels, vocabulary 20,000, and one
checkpoint of the default pretraining shape (6 layers, hidden 256, 4 heads, FFN 512, randomly
initialized: throughput does not depend on the weights) shared by both packages. One epoch of
fine-tuning (train batch 12, prediction batch 24) on each package's own 80/20 split; stformer runs
``--repeats`` times and its median figures are reported (runs vary by up to ±10% on a shared
machine; the reference's longer run averages over more time). Each package
gets the cells in its own token format: stformer's hold the expressed genes only; the reference
tokenizer fills every cell up to 2,048 tokens with unexpressed genes (its collator requires
equal lengths), which the runner reproduces.

    python benchmarks/bench_classify.py --reference ../reference-venv
"""

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
from _machine import cpu
from _runs import median_of_runs

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=480)
    p.add_argument("--vocab", type=int, default=20_000)
    p.add_argument("--reference", type=Path)
    p.add_argument("--repeats", type=int, default=3, help="stformer runs (medians reported)")
    p.add_argument("--workdir", type=Path, default=Path("bench_output"))
    a = p.parse_args()

    from transformers import BertConfig, BertForMaskedLM

    from stformer import build_custom_tokenizer

    rng = np.random.default_rng(0)
    lengths = rng.integers(min(200, a.vocab // 4), min(2049, a.vocab - 2), a.cells)
    tokens = np.concatenate([rng.choice(np.arange(2, a.vocab), n, replace=False) for n in lengths])
    a.workdir.mkdir(parents=True, exist_ok=True)
    data = a.workdir / "classify_cells.npz"
    np.savez(data, tokens=tokens, lengths=lengths, labels=np.arange(a.cells) % 5, vocab_size=a.vocab)
    vocab = {"<pad>": 0, "<mask>": 1, **{f"G{i}": i for i in range(2, a.vocab)}}
    model_dir = a.workdir / "classify_checkpoint"
    config = BertConfig(
        vocab_size=a.vocab,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        hidden_act="relu",
        max_position_embeddings=2048,
        attention_probs_dropout_prob=0.0,
        hidden_dropout_prob=0.02,
        pad_token_id=0,
    )
    BertForMaskedLM(config).save_pretrained(model_dir)
    build_custom_tokenizer(vocab, model_max_length=2048).save_pretrained(model_dir)
    (model_dir / "vocab.pkl").write_bytes(pickle.dumps(vocab))

    rows = []
    runs = [("stformer", sys.executable)]
    if a.reference:
        runs.append(("reference 0.1.3a0", str(a.reference / "bin" / "python")))
    for label, python in runs:
        impl = "stformer" if label == "stformer" else "reference"
        cmd = [python, str(HERE / "classify_runner.py"), "--impl", impl, "--data", str(data), "--model", str(model_dir)]
        rows.append((label, median_of_runs(cmd, label, a.repeats if impl == "stformer" else 1)))

    ref = dict(rows).get("reference 0.1.3a0", {})
    ours_flops, ref_flops = (forward_flops(n, config).mean() for n in (lengths, np.full(a.cells, 2048)))
    print(
        f"\nCell classification, {a.cells} synthetic cells of 200-2,048 genes (5 labels), vocab {a.vocab:,}, "
        f"6 layers x 256 hidden, 1 epoch, 80/20 split; CPU: {cpu()}"
    )
    print(
        f"forward GFLOP per cell: stformer {ours_flops / 1e9:.2f} (cut to its genes), reference "
        f"{ref_flops / 1e9:.2f} (filled to 2,048): at equal kernel speed stformer is {ref_flops / ours_flops:.2f}x"
    )
    print(
        f"{'package':<20} {'train cells/s':>14} {'predict cells/s':>16} {'peak GB':>8} {'train vs ref':>13} "
        f"{'predict vs ref':>15}"
    )
    for label, r in rows:
        if "error" in r:
            print(f"{label:<20} error: {r['error']}")
            continue
        tr = f"{r['train_cells_per_s'] / ref['train_cells_per_s']:.1f}x" if "train_s" in ref else "-"
        pr = f"{r['predict_cells_per_s'] / ref['predict_cells_per_s']:.1f}x" if "predict_s" in ref else "-"
        print(
            f"{label:<20} {r['train_cells_per_s']:>14.1f} {r['predict_cells_per_s']:>16.1f} {r['peak_gb']:>8.2f} "
            f"{tr:>13} {pr:>15}"
        )


def forward_flops(lengths: np.ndarray, config) -> np.ndarray:
    """Matrix-multiply FLOPs of one encoder forward pass per cell of ``lengths`` tokens (cells,).

    Per token and layer: 2 x (4 h^2 + 2 h ffn) in the linear layers and 4 L h in attention.
    """
    h, ffn = config.hidden_size, config.intermediate_size
    per_token = 2 * (4 * h * h + 2 * h * ffn) + 4 * lengths.astype(float) * h
    return config.num_hidden_layers * lengths * per_token


if __name__ == "__main__":
    main()
