"""Dataset utilities for classification: filtering, rare classes, downsampling and labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, load_from_disk

from .._constants import IGNORE_INDEX, INPUT_IDS, LABEL, LABELS
from .._datasets import column_values, matching_rows
from .._errors import InputError
from ..vocab import load_token_dictionary

__all__ = [
    "downsample_and_shuffle",
    "flatten_list",
    "label_classes",
    "load_and_filter",
    "remove_rare",
    "rename_cols",
    "subsample_by_class",
]

SEED = 42


def load_and_filter(filter_data: dict | None, nproc: int, input_data: str | Dataset) -> Dataset:
    """Load a dataset (path or object) and keep examples whose columns hold allowed values.

    ``filter_data`` maps a column to an allowed value or list of values. Filters are vectorized
    (one pass per column), so ``nproc`` is not needed here; it is kept for the API.
    """
    data = load_from_disk(str(input_data)) if isinstance(input_data, (str, Path)) else input_data
    if filter_data:
        data = data.select(matching_rows(data, filter_data))
    if len(data) == 0:
        msg = f"no examples left after filtering with {filter_data}"
        raise InputError(msg)
    return data


def remove_rare(data: Dataset, rare_threshold: float, state_key: str, nproc: int) -> Dataset:
    """Drop examples whose ``state_key`` value makes up less than ``rare_threshold`` of all."""
    if rare_threshold <= 0:
        return data
    values = column_values(data, state_key)
    counts = Counter(values.tolist())
    kept = [v for v, n in counts.items() if n / len(values) >= rare_threshold]
    return data.select(np.flatnonzero(np.isin(values, np.asarray(kept, dtype=object))))


def subsample_by_class(labels: Sequence, N: int, *, seed: int = SEED) -> list[int]:
    """Indices of at most ``N`` randomly chosen examples of each label (seeded), sorted."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=object)
    chosen = []
    for label in sorted(set(labels.tolist()), key=str):
        members = np.flatnonzero(labels == label)
        chosen.extend(rng.choice(members, min(N, len(members)), replace=False).tolist())
    return sorted(chosen)


def downsample_and_shuffle(
    data: Dataset,
    max_ncells: int | None,
    max_ncells_per_class: int | None,
    cell_state_dict: dict,
    *,
    seed: int = SEED,
) -> Dataset:
    """Shuffle (``seed``), keep at most ``max_ncells``, then at most ``max_ncells_per_class`` per class.

    ``cell_state_dict["state_key"]`` names the label column.
    """
    data = data.shuffle(seed=seed)
    if max_ncells is not None and len(data) > max_ncells:
        data = data.select(range(max_ncells))
    if max_ncells_per_class is not None:
        labels = data[cell_state_dict["state_key"]]
        data = data.select(subsample_by_class(labels, max_ncells_per_class, seed=seed))
    return data


def rename_cols(data: Dataset, state_key: str) -> Dataset:
    """Rename column ``state_key`` to ``label``."""
    if state_key == LABEL:
        return data
    if LABEL in data.column_names:
        data = data.remove_columns(LABEL)
    return data.rename_column(state_key, LABEL)


def flatten_list(l: Sequence[Sequence]) -> list[Any]:  # noqa: E741 - the specification's name
    """Flatten one level of nesting: ``[[1, 2], [3]] -> [1, 2, 3]``."""
    return [item for sub in l for item in sub]


def label_classes(
    classifier: str,
    data: Dataset,
    class_dict: dict[str, Sequence] | None,
    token_dict_path: str | None,
    nproc: int,
) -> tuple[Dataset, dict]:
    """Turn labels into integer ids; returns the labeled dataset and ``{class: id}``.

    ``"cell"``: the ``label`` column's values (sorted) become 0..k-1. ``"gene"``: each token of a
    gene listed in ``class_dict`` (class -> gene identifiers) gets its class id in a ``labels``
    column (-100 elsewhere); examples without any labeled gene are dropped.
    """
    if classifier == "cell":
        values = column_values(data, LABEL)
        classes = sorted(set(values.tolist()), key=str)
        class_to_id = {c: i for i, c in enumerate(classes)}
        ids = [class_to_id[v] for v in values.tolist()]
        return data.remove_columns(LABEL).add_column(LABEL, ids), class_to_id
    if classifier != "gene":
        msg = f"classifier must be 'cell' or 'gene', got {classifier!r}"
        raise InputError(msg)
    if not class_dict or token_dict_path is None:
        msg = "gene classification needs class_dict (class -> genes) and token_dict_path"
        raise InputError(msg)
    vocab = load_token_dictionary(token_dict_path)
    class_to_id = {c: i for i, c in enumerate(sorted(class_dict, key=str))}
    token_class = {}
    for cls, genes in class_dict.items():
        for gene in genes:
            if gene not in vocab:
                continue
            token = vocab[gene]
            if token_class.get(token, class_to_id[cls]) != class_to_id[cls]:
                msg = f"gene {gene!r} is listed in more than one class of gene_class_dict"
                raise InputError(msg)
            token_class[token] = class_to_id[cls]
    if not token_class:
        msg = f"no gene of gene_class_dict is in the vocabulary {token_dict_path}"
        raise InputError(msg)
    lookup = np.full(len(vocab), IGNORE_INDEX, dtype=np.int64)
    lookup[list(token_class)] = list(token_class.values())

    def label(batch: dict) -> dict:
        return {LABELS: [lookup[np.asarray(ids)].tolist() for ids in batch[INPUT_IDS]]}

    data = data.map(label, batched=True, num_proc=nproc if len(data) >= 20_000 else None)
    has_label = [any(v != IGNORE_INDEX for v in row) for row in data[LABELS]]
    return data.select(np.flatnonzero(has_label)), class_to_id


def label_cells(data: Dataset, label_mapping: dict | None, nproc: int) -> tuple[Dataset, dict]:
    """Cell labels as class ids: ``label_mapping`` (class -> id) when given, else the sorted classes."""
    if label_mapping is None:
        return label_classes("cell", data, None, None, nproc)
    values = [str(v) for v in data[LABEL]]
    unknown = sorted(set(values) - {str(k) for k in label_mapping})
    if unknown:
        msg = f"labels {unknown[:5]} are not in label_mapping; add them or filter them out"
        raise InputError(msg)
    mapping = {str(k): v for k, v in label_mapping.items()}
    return data.remove_columns(LABEL).add_column(LABEL, [mapping[v] for v in values]), dict(label_mapping)
