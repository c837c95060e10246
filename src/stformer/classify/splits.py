"""Train/test splits: cells stratified by class (optionally grouped by sample), genes held out per class."""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from .._constants import IGNORE_INDEX, INPUT_IDS, LABEL, LABELS
from .._errors import InputError, InputKeyError


def split_cells(
    data: Dataset, test_size: float, seed: int, group_column: str | None, held_out: list[str] | None = None
) -> tuple[Dataset, Dataset]:
    """Stratified train/test split of cells; with ``group_column`` no group spans both sides.

    ``held_out``: exactly these groups of ``group_column`` form the test side (``test_size`` unused).
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    labels = np.asarray(data[LABEL])
    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        rare = np.flatnonzero((counts > 0) & (counts < 2)).tolist()
        msg = f"classes {rare} have a single example and cannot be split; raise rare_threshold or give eval_dataset"
        raise InputError(msg)
    index = np.arange(len(data))
    if group_column is None:
        train, test = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
    else:
        if group_column not in data.column_names:
            msg = f"split_column {group_column!r} is not a dataset column (columns: {data.column_names})"
            raise InputKeyError(msg)
        groups = np.asarray(data[group_column]).astype(str)
        if held_out:
            missing = sorted(set(map(str, held_out)) - set(groups))
            if missing or set(groups) <= set(map(str, held_out)):
                msg = (
                    f"held_out_groups {missing or held_out} of split_column {group_column!r}: "
                    f"{'not found' if missing else 'leave nothing to train on'} (groups: {sorted(set(groups))[:10]})"
                )
                raise InputError(msg)
            test = np.isin(groups, list(map(str, held_out)))
            return data.select(np.flatnonzero(~test)), data.select(np.flatnonzero(test))
        n_splits = max(2, round(1 / test_size))
        if len(set(groups)) < n_splits:
            msg = f"split_column {group_column!r} has {len(set(groups))} groups; need at least {n_splits}"
            raise InputError(msg)
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, test = next(folds.split(index, labels, groups))
    return data.select(np.sort(train)), data.select(np.sort(test))


def split_genes(data: Dataset, test_size: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split the *genes* of each class: training sees only train genes' labels, evaluation only test genes'."""
    rng = np.random.default_rng(seed)
    ids = [np.asarray(x) for x in data[INPUT_IDS]]
    labels = [np.asarray(x) for x in data[LABELS]]
    gene_class = {}
    for seq, lab in zip(ids, labels, strict=True):
        for gene, cls in zip(seq[lab != IGNORE_INDEX], lab[lab != IGNORE_INDEX], strict=True):
            gene_class[int(gene)] = int(cls)
    test_genes = set()
    for cls in sorted(set(gene_class.values())):
        genes = sorted(g for g, c in gene_class.items() if c == cls)
        if len(genes) < 2:
            msg = f"gene class {cls} has {len(genes)} gene(s) in the data; a gene split needs two or more per class"
            raise InputError(msg)
        n_test = min(len(genes) - 1, max(1, round(test_size * len(genes))))
        test_genes.update(rng.choice(genes, n_test, replace=False).tolist())
    test_array = np.asarray(sorted(test_genes))

    def relabel(keep_test: bool):
        def fn(batch):
            out = []
            for seq, lab in zip(batch[INPUT_IDS], batch[LABELS], strict=True):
                seq, lab = np.asarray(seq), np.asarray(lab).copy()
                lab[np.isin(seq, test_array) != keep_test] = IGNORE_INDEX
                out.append(lab.tolist())
            return {LABELS: out}

        return fn

    parts = []
    for keep_test in (False, True):
        part = data.map(relabel(keep_test), batched=True)
        has = [any(v != IGNORE_INDEX for v in row) for row in part[LABELS]]
        parts.append(part.select(np.flatnonzero(has)))
    return parts[0], parts[1]
