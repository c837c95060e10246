"""Does pretraining pay? The run's classifier again from a random initialization, and on shares of its labels.

Every arm fine-tunes with the run's classify settings and seed and is scored on the run's
held-out cells (``eval.dataset``, unchanged): ``pretrained`` starts from the pretrained model,
``random`` from a model of the same shape with freshly initialized weights. Each share of the
labels is a stratified, seeded subsample of the training cells (at least one cell per class).
The run's own classifier is the ``pretrained`` arm with every label.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from datasets import Dataset, load_from_disk

from .._constants import (
    ARMS_DIR,
    ARMS_SUMMARY,
    CELL_ID,
    EVAL_DATASET,
    EVAL_METRICS_FILE,
    LABEL,
    TRAIN_DATASET,
    VOCAB_FILE,
)
from .._files import atomic_path, write_json
from .._sampling import stratified_subsample

INITIALIZATIONS = ("pretrained", "random")


def random_initialization(pretrained: Path, out: Path, seed: int) -> Path:
    """A model folder like ``pretrained`` (configuration, dictionary, tokenizer) with freshly initialized weights."""
    from transformers import AutoConfig, set_seed

    from ..pretrain.model import BertForMaskedGenes

    config = AutoConfig.from_pretrained(str(pretrained), local_files_only=True)
    set_seed(seed)
    with atomic_path(out, overwrite=True) as tmp:
        BertForMaskedGenes(config).save_pretrained(tmp)  # safetensors
        for extra in pretrained.iterdir():  # the dictionary and the tokenizer, as the pretrained folder has them
            if (
                extra.name == VOCAB_FILE
                or extra.name.startswith("tokenizer")
                or extra.name == "special_tokens_map.json"
            ):
                shutil.copy(extra, tmp / extra.name)
    return out


def training_share(labeled: Dataset, held_out: set[str], fraction: float, seed: int) -> Dataset:
    """The training cells (``labeled`` without the held-out ids), a stratified seeded ``fraction`` of them."""
    ids = np.asarray(labeled[CELL_ID])
    train = labeled.select(np.flatnonzero(~np.isin(ids, list(held_out))))
    if fraction >= 1:
        return train
    labels = np.asarray(train[LABEL])
    return train.select(stratified_subsample(labels, max(1, round(fraction * len(labels))), seed=seed))


def train_arms(classifier, settings, pretrained: Path, labeled_path: Path, id_class_file: Path, out: Path) -> Path:
    """Fine-tune every arm that ``settings`` asks for into ``out/arms/``; write and return its summary's path.

    ``settings`` (a :class:`~stformer.settings.ClassifyConfig`): ``random_init_baseline`` adds
    the ``random`` arm, ``label_fractions`` the shares of the labels. ``out`` is the run's
    classify folder (its model, ``eval.dataset`` and ``eval_metrics.json`` are the
    ``pretrained`` arm with every label). The summary lists, per arm, ``initialization``,
    ``fraction``, ``n_train``, ``macro_f1``, ``accuracy`` and ``folder`` (relative to ``out``).
    """
    root = out / ARMS_DIR
    root.mkdir(exist_ok=True)
    labeled, evaluation = load_from_disk(str(labeled_path)), load_from_disk(str(out / EVAL_DATASET))
    held_out = set(evaluation[CELL_ID])
    starts = {"pretrained": pretrained}
    if settings.random_init_baseline:
        starts["random"] = random_initialization(pretrained, root / "random_initialization", settings.seed)
    main = json.loads((out / EVAL_METRICS_FILE).read_text())
    rows = [_row("pretrained", 1.0, len(labeled) - len(held_out), main, ".")]
    for fraction in sorted(set(settings.label_fractions or []) | {1.0}):
        for initialization, start in starts.items():
            if initialization == "pretrained" and fraction == 1.0:
                continue  # the run's own classifier
            folder = root / f"{initialization}-{fraction:g}"
            share = training_share(labeled, held_out, fraction, settings.seed)
            with atomic_path(folder / TRAIN_DATASET, overwrite=True) as tmp:
                share.save_to_disk(str(tmp))
            classifier.train(
                str(start),
                str(folder / TRAIN_DATASET),
                str(folder),
                eval_dataset=evaluation,
                id_class_dict_file=str(id_class_file),
                overwrite=True,
            )
            metrics = json.loads((folder / EVAL_METRICS_FILE).read_text())
            rows.append(_row(initialization, fraction, len(share), metrics, str(folder.relative_to(out))))
    return write_json(rows, root / ARMS_SUMMARY, overwrite=True)


def _row(initialization: str, fraction: float, n_train: int, metrics: dict, folder: str) -> dict:
    return {
        "initialization": initialization,
        "fraction": fraction,
        "n_train": n_train,
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "folder": folder,
    }
