"""Label maps: class id <-> class name, written and read one way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._constants import ID_CLASS_SUFFIX, IGNORE_INDEX, LABEL, LABELED_SUFFIX, LABELS
from .._errors import InputError
from .._files import load_mapping_file, write_pickle


def write_id_class_dict(class_to_id: dict, path: str | Path) -> Path:
    """Write ``{class id: class name}`` (integer keys, names as strings) as the specification's pickle."""
    return write_pickle({i: str(c) for c, i in class_to_id.items()}, path, overwrite=True)


def read_id_class_dict(path: str | Path) -> dict[int, str]:
    """Read a label map and return it as ``{class id: class name}``.

    Each form is read one way, by the types of its keys, never by guessing from its values:

    - keys that are integer ids (in JSON, strings of digits): id -> class, the form stformer
      writes (``{prefix}_id_class_dict.pkl``, ``model/id_class_dict.json``), whatever the classes
      are, so integer labels (clusters, 0/1 phenotypes) keep their names;
    - keys that are class names and values integer ids: class -> id, as Geneformer and the
      reference package write it.

    >>> read_id_class_dict("cls/pbmc_id_class_dict.pkl")  # doctest: +SKIP
    {0: 'B cell', 1: 'T cell'}
    """
    mapping = load_mapping_file(path)
    if not isinstance(mapping, dict) or not mapping:
        msg = f"{path}: expected a non-empty dict of class ids and names"
        raise InputError(msg)

    def as_id(value) -> int | None:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        return int(value) if isinstance(value, str) and value.isdigit() and Path(path).suffix == ".json" else None

    key_ids = [as_id(k) for k in mapping]
    if all(i is not None for i in key_ids):
        return {i: str(v) for i, v in zip(key_ids, mapping.values(), strict=True)}
    value_ids = [as_id(v) if not isinstance(v, str) else None for v in mapping.values()]
    if all(i is not None for i in value_ids):
        return {i: str(k) for k, i in zip(mapping, value_ids, strict=True)}
    msg = (
        f"{path}: a label map needs integer class ids as its keys (id -> class) or as its values "
        f"(class -> id); found keys like {list(mapping)[:3]} and values like {list(mapping.values())[:3]}"
    )
    raise InputError(msg)


def class_names(dataset_path: str | Path, data, classifier_type: str) -> dict[int, str]:
    """Class names: the label map beside a prepared dataset, else the ids themselves."""
    path = Path(dataset_path)
    candidate = path.with_name(path.name.replace(LABELED_SUFFIX, ID_CLASS_SUFFIX))
    if path.name.endswith(LABELED_SUFFIX) and candidate.exists():
        return read_id_class_dict(candidate)
    column = LABEL if classifier_type == "sequence" else LABELS
    if column not in data.column_names:
        msg = f"{dataset_path}: no {column!r} column; prepare it with GenericClassifier.prepare_data"
        raise InputError(msg)
    values = data[column] if column == LABEL else [v for row in data[column] for v in row]
    return {int(i): str(i) for i in sorted(set(values)) if i != IGNORE_INDEX}
