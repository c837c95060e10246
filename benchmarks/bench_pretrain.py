"""Pretraining throughput (real tokens/s), model FLOPs utilization and peak memory.

Synthetic cells of 200-2,048 expressed genes (uniform), vocabulary 20,000, default model
(6 layers, hidden 256, 4 heads, FFN 512), batch 12; each configuration runs in a fresh process
for ``--warmup`` + ``--steps`` steps, the default configuration ``--repeats`` times (its median
figures are reported: runs vary by up to ±10% on a shared machine). The reference package (PyPI
stformer 0.1.3a0, transformers 4.57, fp32, attention dropout 0.02 as in Geneformer's recipe,
length-grouped) runs on the same cells and model shape in the same run when ``--reference VENV``
is given.

    python benchmarks/bench_pretrain.py --reference ../reference-venv
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu
from _runs import median_of_runs

from stformer._hardware import bf16_is_fast

HERE = Path(__file__).resolve().parent
DEFAULT = "+ stformer's kernels (the default)"


def matmul_peak_tflops(dtype: torch.dtype) -> float:
    """Measured matrix-multiply peak of this machine in ``dtype`` (2048^3 products)."""
    a = torch.randn(2048, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - start) / 1e12


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=600)
    p.add_argument("--vocab", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reference", type=Path)
    p.add_argument("--reference-steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="runs of stformer's default row (median of each figure)")
    p.add_argument("--workdir", type=Path, default=Path("bench_output"))
    a = p.parse_args()

    rng = np.random.default_rng(0)
    lengths = rng.integers(200, 2049, a.cells)
    tokens = np.concatenate([rng.choice(np.arange(2, a.vocab), n, replace=False) for n in lengths])
    a.workdir.mkdir(parents=True, exist_ok=True)
    data = a.workdir / "pretrain_cells.npz"
    np.savez(data, tokens=tokens, lengths=lengths, vocab_size=a.vocab)

    # Where the CPU has no bf16 matrix instructions (AVX2 only) stformer trains in fp32, as here, and
    # utilization is against the fp32 peak (an emulated bf16 peak takes minutes to measure there).
    fast_bf16 = bf16_is_fast("cpu")
    bf16 = ["--bf16"] if fast_bf16 else []
    stock = ["--stock-kernels"]
    runs = [
        ("stformer", "as reference: full logits, attn dropout 0.02, fp32", [*stock, "--attention-dropout", "0.02"]),
        ("stformer", "+ attention dropout 0 (fused SDPA)", stock),
        ("stformer", "+ blocked loss at masked positions only", [*stock, "--masked-only"]),
        *([("stformer", "+ bf16 autocast", [*stock, "--masked-only", *bf16])] if fast_bf16 else []),
        ("stformer", DEFAULT, ["--masked-only", *bf16]),
        ("stformer", "default, without length grouping", ["--masked-only", *bf16, "--no-grouping"]),
    ]
    if a.reference:
        runs.append(("reference", "reference 0.1.3a0 (its defaults)", ["--attention-dropout", "0.02"]))
    precision = "bf16" if fast_bf16 else "fp32"
    peak = matmul_peak_tflops(torch.bfloat16 if fast_bf16 else torch.float32)
    rows = []
    for impl, label, extra in runs:
        python = str(a.reference / "bin" / "python") if impl == "reference" else sys.executable
        steps = a.reference_steps if impl == "reference" else a.steps
        cmd = [
            python,
            str(HERE / "pretrain_runner.py"),
            "--impl",
            impl,
            "--data",
            str(data),
            "--steps",
            str(steps),
            "--warmup",
            str(a.warmup),
            *extra,
        ]
        rows.append((label, median_of_runs(cmd, label, a.repeats if label == DEFAULT else 1)))

    ref = next((r for label, r in rows if label.startswith("reference") and "tokens_per_s" in r), None)
    print(
        f"\nPretraining, {a.cells} synthetic cells of 200-2,048 genes, vocab {a.vocab:,}, 6 layers x 256 "
        f"hidden, 4 heads, FFN 512, batch 12, {torch.get_num_threads()} threads; "
        f"{precision} matmul peak measured {peak:.2f} TFLOP/s (MFU against it); CPU: {cpu()}"
    )
    print(
        f"{'configuration':<52} {'tokens/s':>9} {'s/step':>7} {'pad %':>6} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'peak GB':>8} {'vs ref':>7}"
    )
    for label, r in rows:
        if "error" in r:
            print(f"{label:<52} error: {r['error']}")
            continue
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.1f}x" if ref else "-"
        print(
            f"{label:<52} {r['tokens_per_s']:>9,.0f} {r['seconds_per_step']:>7.2f} "
            f"{100 * r['padding_fraction']:>6.1f} {r['tflops']:>8.3f} {r['tflops'] / peak:>6.1%} "
            f"{r['peak_gb']:>8.2f} {ratio:>7}"
        )


if __name__ == "__main__":
    main()
