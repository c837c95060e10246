"""``stformer run`` at atlas scale: time and peak memory of every stage, at two sizes.

Synthetic cells x 20,000 genes (~500 expressed per cell, 4 slides, a random ``cell_type``)
through the whole run with a tiny model (hidden 32, 2 layers, 2 heads) and a fixed number of
training steps (pretraining and fine-tuning), so that what grows with the cells is the data
work: tokenizing, preparing and splitting the classification data, predicting the held-out
cells, embedding every cell, the report (its baseline and UMAP on subsamples) and a small
perturbation screen. Each stage runs in its own process (``stformer run --stages``-style, the
earlier stages' outputs reused), so its peaks are its own: resident (VmHWM, which counts the
pages of the memory-mapped datasets a stage reads through) and anonymous (private, sampled).
Inputs are written once under ``--workdir`` (1M cells: ~3 GB, ~2 minutes); ``--stages`` measures
some stages again on the outputs of an earlier run.

    python benchmarks/bench_run_scale.py                      # 100k and 1M cells
    python benchmarks/bench_run_scale.py --cells 20000 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from _machine import cpu

HERE = Path(__file__).resolve().parent

STAGE = f"""
import json, sys, time
sys.path.insert(0, {str(HERE)!r})
from _memory import PeakAnonymous, peak_rss_kb
from stformer.pipeline import run_pipeline
from stformer.settings import load_run_config
start = time.perf_counter()
with PeakAnonymous() as anonymous:
    run_pipeline(load_run_config(sys.argv[1]), stages=(sys.argv[2],), progress=False)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_gb": peak_rss_kb() / 1e6, "anon_gb": anonymous.kb / 1e6}}))
"""


def run_config(h5ad: Path, out: Path, steps: int) -> dict:
    return {
        "data": [str(h5ad.resolve())],
        "output_dir": str(out.resolve()),
        "label_column": "cell_type",
        "tokenize": {"mode": "spot", "nproc": 2},
        "pretrain": {
            "num_layers": 2,
            "hidden_size": 32,
            "num_heads": 2,
            "intermediate_size": 64,
            "max_length": 2048,
            "max_steps": steps,
            "save_steps": 10 * steps,
        },
        "classify": {"training_args": {"max_steps": steps, "per_device_train_batch_size": 16, "logging_steps": 50}},
        "perturb": {"max_cells": 10, "genes": "all"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--expressed", type=int, default=500)
    p.add_argument("--steps", type=int, default=100, help="training steps of pretraining and of fine-tuning")
    p.add_argument("--workdir", type=Path, default=Path("bench_output"))
    p.add_argument("--stages", nargs="+", help="only these stages, again, on an earlier run's outputs")
    a = p.parse_args()
    sys.path.insert(0, str(HERE))
    from synthetic_h5ad import ensure

    from stformer._constants import STAGES

    stages = a.stages or STAGES
    table = {}
    for n in a.cells:
        folder = a.workdir / f"run_scale_{n}"
        h5ad = ensure(a.workdir / f"cells{n}_genes{a.genes}_expr{a.expressed}" / "data.h5ad", n, a.genes, a.expressed)
        if a.stages is None:
            shutil.rmtree(folder, ignore_errors=True)  # every stage runs anew
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "run.yaml"
        config.write_text(yaml.safe_dump(run_config(h5ad, folder / "run", a.steps)))
        for stage in stages:
            (folder / "run" / ".stages" / f"{stage}.json").unlink(missing_ok=True)
            proc = subprocess.run([sys.executable, "-c", STAGE, str(config), stage], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{stage} at {n:,} cells failed:\n{proc.stderr[-3000:]}")
            table[stage, n] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"# {n:,} cells, {stage}: {table[stage, n]}", flush=True)

    print(
        f"\nstformer run on synthetic cells x {a.genes:,} genes (~{a.expressed} expressed); model 2 x 32, "
        f"{a.steps} pretraining and {a.steps} fine-tuning steps; CPU: {cpu()}"
    )
    print("peak: resident (VmHWM, with the file pages of the memory-mapped datasets) / anonymous (private)")
    header = " ".join(f"{f'{n:,} cells: s':>16} {'peak GB':>11}" for n in a.cells)
    print(f"{'stage':<10} {header}" + (f" {'time ratio':>10}" if len(a.cells) > 1 else ""))
    for stage in stages:
        cells = " ".join(
            f"{table[stage, n]['seconds']:>16.1f} {table[stage, n]['peak_gb']:>5.2f}/{table[stage, n]['anon_gb']:<5.2f}"
            for n in a.cells
        )
        ratio = table[stage, a.cells[-1]]["seconds"] / table[stage, a.cells[0]]["seconds"]
        print(f"{stage:<10} {cells}" + (f" {ratio:>10.1f}" if len(a.cells) > 1 else ""))


if __name__ == "__main__":
    main()
