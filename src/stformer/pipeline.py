"""``stformer run``: every stage from h5ad/loom files to a classifier, embeddings and a report.

One config (YAML/JSON) holds each stage's settings. A stage whose outputs exist and whose inputs
(its settings and the stages before it) are unchanged is skipped, so a re-run after an
interruption continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ._constants import EVAL_DATASET, LABELED_SUFFIX, MODEL_DIR, STAGES, STAMPS_DIR, VOCAB_FILE
from ._files import atomic_path, file_identity, write_json
from .settings import RunConfig, load_run_config

CLASSIFY_PREFIX = "cells"  # the run's classifier files: cells_labeled.dataset, cells_id_class_dict.pkl


def check_inputs(config: RunConfig) -> None:
    """Fail before any long work: missing files, missing columns a stage reads, unknown gene ids."""
    from .tokenize import check_input_files

    check_input_files(config.data, config.input, config.carried_columns())
    if config.pretrain.init_from is not None:
        from .checkpoints import open_model_folder

        open_model_folder(config.pretrain.init_from, config.vocabulary_file())


def run_pipeline(config: RunConfig, *, stages: tuple[str, ...] = STAGES, progress: bool = True) -> dict:
    """Run (or skip, when done) each stage; returns ``{stage: seconds or "skipped"}``."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_inputs(config)
    paths = {
        "medians": out / "medians.json",
        "vocab": out / VOCAB_FILE,
        "tokenize": out / "tokens",
        "pretrain": out / "pretrain" / config.pretrain.run_name / "model",
        "classify": out / "classify",
        "labeled": out / "classify" / f"{CLASSIFY_PREFIX}{LABELED_SUFFIX}",
        "eval": out / "classify" / EVAL_DATASET,
        "embed": out / "embeddings",
        "perturb": out / "perturb",
        "network": out / "network",
        "report": out / "report" / "summary.md",
    }
    stamps = out / STAMPS_DIR
    stamps.mkdir(exist_ok=True)
    upstream, fingerprints = "", {}
    for stage in STAGES:
        section = {
            "medians": lambda: [asdict(config.medians_settings()), file_identity(config.gene_medians)],
            "vocab": lambda: file_identity(config.token_dictionary),
            "tokenize": lambda: asdict(config.tokenize_settings()),
            "pretrain": lambda: [asdict(config.pretrain), file_identity(config.pretrain.init_from)],
            "classify": lambda: asdict(config.classify_settings()),
            "embed": lambda: asdict(config.embed),
            "perturb": lambda: config.perturb and asdict(config.perturb),
            "network": lambda: config.network and asdict(config.network),
        }.get(stage, lambda: None)()
        upstream = fingerprints[stage] = hashlib.sha256(
            json.dumps([upstream, config.data, section], sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
    actions: dict[str, Callable[[], None]] = {
        "medians": lambda: _medians(config, paths),
        "vocab": lambda: _vocab(config, paths),
        "tokenize": lambda: _tokenize(config, paths, progress),
        "pretrain": lambda: _pretrain(config, paths, fingerprints["pretrain"]),
        "classify": lambda: _classify(config, paths),
        "embed": lambda: _embed(config, paths, progress),
        "perturb": lambda: _perturb(config, paths, progress),
        "network": lambda: _network(config, paths, progress),
        "report": lambda: _report(config, paths, out),
    }
    outputs = {**paths, "classify": paths["classify"] / MODEL_DIR}
    log = {}
    for stage in STAGES:
        stamp = stamps / f"{stage}.json"
        recorded = json.loads(stamp.read_text()) if stamp.exists() else {}
        done = recorded.get("fingerprint") == fingerprints[stage] and outputs[stage].exists()
        changed = _changed_file(outputs[stage], recorded.get("files")) if done else None
        if changed is not None and stage in stages:
            print(f"[stformer run] {stage}: {changed} changed since the stage wrote it; running the stage again")
        if stage not in stages or (done and changed is None):
            log[stage] = "skipped"
            continue
        if stage in ("perturb", "network") and getattr(config, stage) is None:
            log[stage] = "not configured"
            continue
        start = time.perf_counter()
        actions[stage]()
        log[stage] = round(time.perf_counter() - start, 1)
        files = _inventory(outputs[stage])
        write_json({"fingerprint": fingerprints[stage], "seconds": log[stage], "files": files}, stamp, overwrite=True)
        print(f"[stformer run] {stage}: {log[stage]} s", flush=True)
    return log


def _inventory(path: Path) -> dict[str, int]:
    """Size in bytes of every file a stage wrote (``path``, or the files below it), by relative path."""
    if path.is_file():
        return {path.name: path.stat().st_size}
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}


def _changed_file(path: Path, recorded: dict[str, int] | None) -> str | None:
    """The first file of ``path`` missing or of another size than its stamp recorded (None: all as written).

    A stamp of an older stformer, without sizes, is trusted as before.
    """
    if recorded is None:
        return None
    now = _inventory(path)
    for name, size in recorded.items():
        if now.get(name) != size:
            where = path / name if path.is_dir() else path
            return f"{where} ({size:,} bytes when written, {'missing' if name not in now else f'{now[name]:,}'} now)"
    return None


def _medians(config: RunConfig, paths: dict) -> None:
    from ._files import load_mapping_file
    from .tokenize import compute_gene_medians, write_gene_medians

    medians = (
        load_mapping_file(config.gene_medians)
        if config.gene_medians is not None
        else compute_gene_medians(config.data, config.medians_settings())
    )
    write_gene_medians(medians, paths["medians"], overwrite=True)


def _vocab(config: RunConfig, paths: dict) -> None:
    from ._files import load_mapping_file
    from .vocab import build_token_dictionary, load_token_dictionary, save_token_dictionary

    given = config.vocabulary_file()
    vocab = load_token_dictionary(given) if given else build_token_dictionary(load_mapping_file(paths["medians"]))
    save_token_dictionary(vocab, paths["vocab"], overwrite=True)


def _tokenize(config: RunConfig, paths: dict, progress: bool) -> None:
    from .tokenize import tokenize_data

    tokenize_data(
        config.data,
        paths["tokenize"],
        paths["medians"],
        paths["vocab"],
        config.tokenize_settings(),
        overwrite=True,
        progress=progress,
    )


def _pretrain(config: RunConfig, paths: dict, fingerprint: str) -> None:
    """Pretrain in a folder of this fingerprint's own; replace the previous model only when done.

    An interrupted run with the same settings and inputs continues from its last checkpoint; a
    run whose settings or tokens changed starts clean (the old model stays until the new one is
    complete).
    """
    from transformers.trainer_utils import get_last_checkpoint

    from .pretrain import pretrain

    settings = config.pretrain
    root = paths["pretrain"].parent.parent  # output_dir/pretrain
    if settings.init_from is not None and settings.epochs == 0 and settings.max_steps <= 0:
        _adopt(settings, root / settings.run_name, paths["vocab"])
        return
    work = root / f".work-{fingerprint}"
    for stale in root.glob(".work-*"):
        if stale != work:
            shutil.rmtree(stale)
    training = work / settings.run_name / "training"
    interrupted = training.is_dir() and get_last_checkpoint(str(training)) is not None
    pretrain(paths["tokenize"], work, settings, resume=interrupted)
    with atomic_path(root / settings.run_name, overwrite=True) as target:
        os.replace(work / settings.run_name, target)
    shutil.rmtree(work)


def _adopt(settings, run_dir: Path, vocab_file: Path) -> None:
    """The ``init_from`` model as this run's pretrained model, untrained further (epochs: 0)."""
    from .checkpoints import open_model_folder, save_model_folder
    from .pretrain.model import BertForMaskedGenes

    folder = open_model_folder(settings.init_from, vocab_file)
    with atomic_path(run_dir, overwrite=True) as target:
        save_model_folder(BertForMaskedGenes.from_pretrained(settings.init_from), target / "model", folder.vocab)


def _classify(config: RunConfig, paths: dict) -> None:
    from .classify import GenericClassifier
    from .classify.arms import train_arms

    settings = config.classify_settings()
    classifier = GenericClassifier.from_config(settings)
    data, labels = classifier.prepare_data(str(paths["tokenize"]), str(paths["classify"]), CLASSIFY_PREFIX)
    classifier.train(
        str(paths["pretrain"]),
        data,
        str(paths["classify"]),
        test_size=settings.test_size,
        id_class_dict_file=labels,
        overwrite=True,
    )
    if settings.random_init_baseline or settings.label_fractions:
        train_arms(classifier, settings, paths["pretrain"], Path(data), Path(labels), paths["classify"])


def _embed(config: RunConfig, paths: dict, progress: bool) -> None:
    from .embedding import embed

    embed(paths["pretrain"], paths["tokenize"], config.embed, out=paths["embed"], overwrite=True, progress=progress)


def _perturb(config: RunConfig, paths: dict, progress: bool) -> None:
    from .perturbation import perturb

    model = paths["classify"] / MODEL_DIR if config.screens_in_classifier() else paths["pretrain"]
    perturb(model, paths["tokenize"], paths["perturb"], config.perturb, overwrite=True, progress=progress)


def _network(config: RunConfig, paths: dict, progress: bool) -> None:
    from .network import network

    network(paths["pretrain"], paths["tokenize"], paths["network"], config.network, overwrite=True, progress=progress)


def _report(config: RunConfig, paths: dict, out: Path) -> None:
    from .report import write_report

    write_report(config, out, paths)


__all__ = ["RunConfig", "check_inputs", "load_run_config", "run_pipeline"]
