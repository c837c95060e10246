"""Tokenizer throughput and peak memory: stformer vs the reference package (PyPI stformer 0.1.3a0).

Each measurement runs in a fresh process (the input file read once before, so both packages
start from the page cache); peak memory is that process's largest resident set, imports
included. The reference runs only where asked (``--reference VENV``), on the same h5ad, medians
and vocabulary, in the same run.

    python benchmarks/bench_tokenize.py --reference ../reference-venv            # 10k cells

The input holds four slides in one file on overlapping grids. Without a sample column both
packages build one graph over all of them (the reference always does), so a cell's neighbors
sit on every slide; ``per-slide`` is stformer's documented setting (``sample_column``), where a
chunk's neighbors are mostly its own rows.
    python benchmarks/bench_tokenize.py --cells 100000 --nproc 1 2
    python benchmarks/bench_tokenize.py --cells 1000000 --expressed 500 --modes spot
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Children import the shared helper from this folder (VmHWM: the child's own peak memory).
PEAK = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from _memory import peak_rss_kb
"""

OURS = (
    PEAK
    + """
import json, sys, time
from stformer import tokenize_data
data, medians, vocab, out, mode, nproc = sys.argv[1:7]
per_slide = mode == "per-slide"  # neighborhood mode with neighbors kept within each slide (sample_column)
start = time.perf_counter()
summary = tokenize_data(data, out, medians, vocab, mode="neighborhood" if per_slide else mode, nproc=int(nproc),
                        sample_column="sample" if per_slide else None, progress=False)
seconds = time.perf_counter() - start
rss = peak_rss_kb()  # workers are threads of this process
print(json.dumps({"seconds": seconds, "peak_gb": rss / 1e6, "cells": summary["n_tokenized"]}))
"""
)

REFERENCE = (
    PEAK
    + """
import json, sys, time, logging
from pathlib import Path
logging.disable(logging.INFO)

from stFormer.tokenization.SpatialTokenize import SpatialTokenizer
data_dir, medians, vocab, out, mode = sys.argv[1:6]
tok = SpatialTokenizer(mode=mode, gene_length=2048, gene_median_file=Path(medians),
                       token_dict_file=Path(vocab))
start = time.perf_counter()
tok.tokenize(Path(data_dir), Path(out), "bench")
seconds = time.perf_counter() - start
from datasets import load_from_disk
n = len(load_from_disk(str(Path(out) / "bench.dataset")))
print(json.dumps({"seconds": seconds, "peak_gb": peak_rss_kb() / 1e6, "cells": n}))
"""
)


def run_child(python: str, code: str, args: list[str]) -> dict:
    proc = subprocess.run([python, "-c", code, *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--expressed", type=int, default=2000)
    p.add_argument(
        "--modes",
        nargs="+",
        default=["spot", "neighborhood", "per-slide"],
        help="per-slide: neighborhood mode with neighbors within each slide (the reference has no such option; "
        "its neighborhood row is the comparison)",
    )
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reference", type=Path, help="virtual environment of the reference package")
    p.add_argument("--workdir", type=Path, default=Path("bench_output"))
    a = p.parse_args()

    sys.path.insert(0, str(HERE))
    from synthetic_h5ad import ensure

    from stformer import build_token_dictionary, compute_gene_medians

    name = f"cells{a.cells}_genes{a.genes}_expr{a.expressed}"
    data_dir = a.workdir / name
    h5ad = ensure(data_dir / "data.h5ad", a.cells, a.genes, a.expressed)
    medians_path = data_dir / "medians.json"
    if not medians_path.exists():
        start = time.perf_counter()
        medians = compute_gene_medians(h5ad, progress=False)
        medians_path.write_text(json.dumps(medians))
        print(f"# medians (t-digest) of {len(medians)} genes: {time.perf_counter() - start:.1f} s")
    medians = json.loads(medians_path.read_text())
    vocab = build_token_dictionary(medians)
    (data_dir / "vocab.json").write_text(json.dumps(vocab))
    (data_dir / "medians.pkl").write_bytes(pickle.dumps(medians))
    (data_dir / "vocab.pkl").write_bytes(pickle.dumps(vocab))

    with h5ad.open("rb") as f:  # warm the page cache for every run alike
        while f.read(1 << 24):
            pass
    rows = []
    for mode in a.modes:
        for nproc in a.nproc:
            with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
                r = run_child(
                    sys.executable,
                    OURS,
                    [h5ad, medians_path, data_dir / "vocab.json", Path(tmp) / "out", mode, nproc],
                )
            rows.append(("stformer", mode, nproc, r))
        if a.reference is not None and mode != "per-slide":
            with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
                only = Path(tmp) / "in"
                only.mkdir()
                (only / "data.h5ad").symlink_to(h5ad.resolve())
                r = run_child(
                    str(a.reference / "bin" / "python"),
                    REFERENCE,
                    [only, data_dir / "medians.pkl", data_dir / "vocab.pkl", Path(tmp), mode],
                )
            rows.append(("reference 0.1.3a0", mode, 1, r))

    print(
        f"\nTokenizer on {a.cells:,} cells x {a.genes:,} genes, ~{a.expressed:,} expressed genes per "
        "cell (synthetic h5ad, CSR), max_length 2048 (spot) / 4096 (neighborhood, stformer)"
    )
    print(
        f"{'package':<18} {'mode':<13} {'nproc':>5} {'cells':>9} {'seconds':>8} {'cells/s':>9} "
        f"{'peak GB':>8} {'vs ref':>7}"
    )
    ref = {mode: r for pkg, mode, _, r in rows if pkg.startswith("reference") and "seconds" in r}
    for pkg, mode, nproc, r in rows:
        if "error" in r:
            print(f"{pkg:<18} {mode:<13} {nproc:>5} error: {r['error']}")
            continue
        rate = r["cells"] / r["seconds"]
        base = "neighborhood" if mode == "per-slide" else mode
        ratio = f"{rate / (ref[base]['cells'] / ref[base]['seconds']):.1f}x" if base in ref else "-"
        print(
            f"{pkg:<18} {mode:<13} {nproc:>5} {r['cells']:>9,} {r['seconds']:>8.2f} {rate:>9,.0f} "
            f"{r['peak_gb']:>8.2f} {ratio:>7}"
        )
    shutil.rmtree(a.workdir / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
