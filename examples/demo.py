"""End-to-end demo on real PBMC data shipped inside scanpy (no network).

Writes the counts h5ad, then runs every stage of ``examples/pbmc.yaml`` with ``stformer run``:
medians -> vocabulary -> tokens -> pretraining (small BERT) -> cell-type classifier
(bulk_labels, stratified 20% held out) -> cell embeddings -> report (macro-F1 next to a
logistic-regression baseline on the same split, confusion matrix, UMAP, training curves).
Run with ``make demo``; outputs go to ``demo_output/``.
"""

import argparse
from pathlib import Path

from stformer.demo import pbmc68k_counts
from stformer.pipeline import load_run_config, run_pipeline

HERE = Path(__file__).resolve().parent


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    h5ad = out / "pbmc68k_counts.h5ad"
    if not h5ad.exists():
        pbmc68k_counts().write_h5ad(h5ad)
    config = load_run_config(HERE / "pbmc.yaml")
    config.data, config.output_dir = [str(h5ad)], str(out / "run")
    print(run_pipeline(config))
    print((out / "run" / "report" / "summary.md").read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    run(parser.parse_args().out.resolve())
