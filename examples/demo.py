"""End-to-end demo on real PBMC data shipped inside scanpy (no network).

Stages so far: raw counts h5ad -> gene medians -> vocabulary -> token dataset.
Run with ``make demo`` (or ``python examples/demo.py --out demo_output``).
"""

import argparse
import time
from pathlib import Path

from datasets import load_from_disk

from stformer.cli import main as stformer
from stformer.demo import pbmc68k_counts


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    h5ad = out / "pbmc68k_counts.h5ad"
    pbmc68k_counts().write_h5ad(h5ad)
    stages = [
        ["medians", str(h5ad), "--out", str(out / "medians.json")],
        ["vocab", "--medians", str(out / "medians.json"), "--out", str(out / "vocab.json")],
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
    ]
    for args in stages:
        start = time.perf_counter()
        if stformer([*args, "--overwrite"]) != 0:
            raise SystemExit(f"stage {args[0]} failed")
        print(f"[demo] {args[0]}: {time.perf_counter() - start:.1f} s")
    tokens = load_from_disk(str(out / "tokens"))
    print(f"[demo] token dataset: {len(tokens)} cells, columns {tokens.column_names}")
    print(
        f"[demo] first cell ({tokens[0]['cell_type']}): {tokens[0]['length']} genes, "
        f"top tokens {tokens[0]['input_ids'][:8]}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    run(parser.parse_args().out)
