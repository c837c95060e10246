"""Does pretraining pay? The pretrained classifier against the same classifier from a random initialization.

Each run is ``stformer run`` with a demo's settings (``examples/pbmc.yaml``, ``examples/dlpfc.yaml``
in neighborhood mode, as ``make demo`` and ``make demo-spatial`` run them) up to the classifier,
with ``classify.random_init_baseline`` and ``label_fractions`` [0.05, 0.2, 1.0]: both arms fine-tune
with the same settings, split and seed, on the same stratified share of the training labels, and
are scored on the same held-out cells. A seed sets the pretraining (initialization, masking,
batches), the split, the label shares and the fine-tuning. DLPFC: pretraining on every spot of the
four slices; the classifier trains on three slices' labelled spots (500 per slice, the demo's
subset) and is scored on the fourth, held out (seed k holds out slice k of 151673-151676).

``--probe-head`` fine-tunes every arm with ``classify.probe_head`` (LP-FT).
``--corpus 0.1 0.3 1.0`` (DLPFC) adds the gain against the pretraining corpus: pretraining on that
seeded share of the spots for ``--corpus-epochs`` epochs (so more spots, more steps), the same
fine-tuning at 5% and 20% of the labels.

    python benchmarks/pretrain_value.py pbmc --seeds 0 1 2
    python benchmarks/pretrain_value.py dlpfc --archive demo_spatial_output/paste2-1.0.1.tar.gz --seeds 0 1 2
    python benchmarks/pretrain_value.py dlpfc --archive ... --seeds 0 1 --corpus 0.1 0.3 1.0
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu

from stformer.pipeline import load_run_config, run_pipeline

HERE = Path(__file__).resolve().parents[1] / "examples"
SLICES = ("151673", "151674", "151675", "151676")
FRACTIONS = [0.05, 0.2, 1.0]
UP_TO_CLASSIFY = ("medians", "vocab", "tokenize", "pretrain", "classify")


def base_config(dataset: str, root: Path, archive: Path | None):
    """The demo's run config, its data in ``root``."""
    if dataset == "pbmc":
        from stformer.demo import pbmc68k_counts

        h5ad = root / "pbmc68k_counts.h5ad"
        if not h5ad.exists():
            pbmc68k_counts().write_h5ad(h5ad)
        config = load_run_config(HERE / "pbmc.yaml")
        config.data = [str(h5ad)]
        return config
    sys.path.insert(0, str(HERE))
    from demo_spatial import extract

    extract(archive, root / "slices", per_slice=500)
    config = load_run_config(HERE / "dlpfc.yaml")
    config.data = [str(root / "slices")]
    config.tokenize.mode, config.tokenize.max_length = "neighborhood", 256
    return config


def run_once(config, out: Path, seed: int, dataset: str, fractions, pretrained: Path | None = None) -> dict:
    """macro-F1 by (initialization, label fraction) of one run with this seed."""
    config = copy.deepcopy(config)
    config.output_dir = str(out)
    config.pretrain.seed = config.classify.seed = seed
    config.classify.random_init_baseline, config.classify.label_fractions = True, list(fractions)
    if dataset == "dlpfc":
        config.classify.held_out_groups = [SLICES[seed % len(SLICES)]]
    if pretrained is not None:
        config.pretrain.init_from, config.pretrain.epochs = str(pretrained), 0
    run_pipeline(config, stages=UP_TO_CLASSIFY, progress=False)
    rows = json.loads((out / "classify" / "arms" / "arms_summary.json").read_text())
    return {(r["initialization"], r["fraction"]): r["macro_f1"] for r in rows}


def corpus_model(tokens: Path, share: float, seed: int, config, epochs: float, out: Path) -> Path:
    """A model pretrained with the run's shape on a seeded ``share`` of the token dataset's cells."""
    from datasets import load_from_disk

    from stformer._constants import LENGTHS_FILE
    from stformer._files import write_pickle
    from stformer.pretrain import pretrain

    data = load_from_disk(str(tokens))
    rows = np.sort(np.random.default_rng(seed).choice(len(data), round(share * len(data)), replace=False))
    data.select(rows).save_to_disk(str(out / "tokens"))
    write_pickle(np.asarray(data["length"])[rows].tolist(), out / "tokens" / LENGTHS_FILE)
    settings = copy.deepcopy(config.pretrain)
    settings.seed, settings.epochs, settings.max_steps, settings.run_name = seed, epochs, -1, "model"
    pretrain(out / "tokens", out, settings, token_dictionary=tokens / "vocab.json")
    return out / "model" / "model"


def _mean_sd(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["pbmc", "dlpfc"])
    p.add_argument("--archive", type=Path, help="dlpfc: paste2-1.0.1.tar.gz (make demo-spatial downloads it)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--corpus", type=float, nargs="*", default=[], help="dlpfc: shares of the spots to pretrain on")
    p.add_argument("--corpus-epochs", type=float, default=3.0)
    p.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--probe-head", action="store_true", help="every arm with classify.probe_head (LP-FT)")
    a = p.parse_args()
    if a.dataset == "dlpfc" and a.archive is None:
        p.error("dlpfc needs --archive")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        config = base_config(a.dataset, root, a.archive)
        config.classify.probe_head = a.probe_head
        scores = {seed: run_once(config, root / f"seed{seed}", seed, a.dataset, FRACTIONS) for seed in a.seeds}
        head = ", probe head" if a.probe_head else ""
        print(f"\n{a.dataset}: pretrained against random initialization{head}, seeds {a.seeds}; CPU: {cpu()}")
        print(f"{'labels':>7} {'pretrained':>15} {'random init':>15} {'gain (paired)':>15}  per seed")
        for fraction in FRACTIONS:
            pre = [scores[s]["pretrained", fraction] for s in a.seeds]
            rnd = [scores[s]["random", fraction] for s in a.seeds]
            gains = np.subtract(pre, rnd)
            print(f"{fraction:>7.0%} {_mean_sd(pre):>15} {_mean_sd(rnd):>15} {_mean_sd(gains):>15}  "
                  + " ".join(f"{g:+.3f}" for g in gains))  # fmt: skip
        if a.corpus:
            n_cells = len(__import__("datasets").load_from_disk(str(root / f"seed{a.seeds[0]}" / "tokens")))
            print(f"\ngain against the pretraining corpus ({a.corpus_epochs:g} epochs; {n_cells:,} spots in all)")
            print(f"{'spots':>7} {'5% gain':>15} {'20% gain':>15}  per seed (5%)")
            for share in a.corpus:
                gains = {0.05: [], 0.2: []}
                for seed in a.seeds:
                    work = root / f"corpus{share:g}-seed{seed}"
                    tokens = root / f"seed{seed}" / "tokens"
                    model = corpus_model(tokens, share, seed, config, a.corpus_epochs, work / "pretrain")
                    run = run_once(config, work / "run", seed, a.dataset, [0.05, 0.2], pretrained=model)
                    for fraction in gains:
                        gains[fraction].append(run["pretrained", fraction] - run["random", fraction])
                print(f"{round(share * n_cells):>7,} {_mean_sd(gains[0.05]):>15} {_mean_sd(gains[0.2]):>15}  "
                      + " ".join(f"{g:+.3f}" for g in gains[0.05]), flush=True)  # fmt: skip
    print(f"({(time.perf_counter() - start) / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
