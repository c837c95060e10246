"""Does pretraining pay? The run's classifier again from a random initialization, and on shares of its labels.

Every arm fine-tunes with the run's classify settings and seed and is scored on the run's
held-out cells (``eval.dataset``, unchanged): ``pretrained`` starts from the pretrained model,
``random`` from a model of the same shape with freshly initialized weights. Each share of the
labels is a stratified, seeded subsample of the training cells (at least one cell per class).
The run's own classifier is the ``pretrained`` arm with every label.
"""

from __future__ import annotations

import json
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
)
from .._files import atomic_path, write_json
from .._sampling import stratified_subsample


def random_initialization(pretrained: Path, out: Path, seed: int) -> Path:
    """A model folder like ``pretrained`` (configuration, dictionary, tokenizer) with freshly initialized weights."""
    from transformers import set_seed

    from ..checkpoints import open_model_folder, save_model_folder
    from ..pretrain.model import BertForMaskedGenes

    folder = open_model_folder(pretrained)
    set_seed(seed)
    with atomic_path(out, overwrite=True) as tmp:
        save_model_folder(BertForMaskedGenes(folder.config), tmp, folder.vocab)
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
    ``fraction``, ``n_train``, ``macro_f1``, ``accuracy``, ``folder`` and ``train_dataset`` (relative to
    ``out``; the arms of one fraction share their training cells, in ``arms/labels-<fraction>/``).
    """
    root = out / ARMS_DIR
    root.mkdir(exist_ok=True)
    labeled, evaluation = load_from_disk(str(labeled_path)), load_from_disk(str(out / EVAL_DATASET))
    held_out = set(evaluation[CELL_ID])
    starts = {"pretrained": pretrained}
    if settings.random_init_baseline:
        starts["random"] = random_initialization(pretrained, root / "random_initialization", settings.seed)
    main = json.loads((out / EVAL_METRICS_FILE).read_text())
    rows = [_row("pretrained", 1.0, len(labeled) - len(held_out), main, ".", None)]  # the run's own classifier
    for fraction in sorted(set(settings.label_fractions or []) | {1.0}):
        arms = [(i, start) for i, start in starts.items() if (i, fraction) != ("pretrained", 1.0)]  # not the run's own
        if not arms:
            continue
        share = training_share(labeled, held_out, fraction, settings.seed)  # one share for every arm of a fraction
        cells = root / f"labels-{fraction:g}" / TRAIN_DATASET
        with atomic_path(cells, overwrite=True) as tmp:
            share.save_to_disk(str(tmp))
        for initialization, start in arms:
            folder = root / f"{initialization}-{fraction:g}"
            classifier.train(
                str(start),
                str(cells),
                str(folder),
                eval_dataset=evaluation,
                id_class_dict_file=str(id_class_file),
                overwrite=True,
            )
            metrics = json.loads((folder / EVAL_METRICS_FILE).read_text())
            relative = (str(folder.relative_to(out)), str(cells.relative_to(out)))
            rows.append(_row(initialization, fraction, len(share), metrics, *relative))
    return write_json(rows, root / ARMS_SUMMARY, overwrite=True)


def _row(initialization: str, fraction: float, n_train: int, metrics: dict, folder: str, cells: str | None) -> dict:
    """One arm of the summary; ``folder`` and ``train_dataset`` (its training cells) relative to the classify folder."""
    return {
        "initialization": initialization,
        "fraction": fraction,
        "n_train": n_train,
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "folder": folder,
        "train_dataset": cells,
    }
