"""Readable PNG plots: confusion matrix and prediction summary (class names on the axes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import CONFUSION_SUFFIX
from .._errors import InputError
from .._figures import new_figure, save_figure
from .._files import safe_load_pickle
from .labels import read_id_class_dict


def _as_matrix(conf_mat: Any, class_order: list[str]) -> np.ndarray:
    """A (classes, classes) count matrix from an array, DataFrame or nested dict {true: {pred: n}}."""
    if isinstance(conf_mat, Mapping):
        return np.array([[conf_mat.get(t, {}).get(p, 0) for p in class_order] for t in class_order], float)
    if hasattr(conf_mat, "loc"):  # DataFrame indexed by class names
        return conf_mat.loc[class_order, class_order].to_numpy(dtype=float)
    matrix = np.asarray(conf_mat, dtype=float)
    if matrix.shape != (len(class_order), len(class_order)):
        msg = f"confusion matrix of shape {matrix.shape} does not match {len(class_order)} classes"
        raise InputError(msg)
    return matrix


def _heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str, path: Path) -> None:
    size = max(4.0, 0.55 * len(cols) + 2)
    fig = new_figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true class")
    ax.set_title(title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j] >= 0.005:
                color = "white" if matrix[i, j] > 0.5 else "black"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    save_figure(fig, path)


def plot_confusion_matrix(conf_mat: Any, output_directory: str, output_prefix: str, class_order: list[str]) -> Path:
    """Save a row-normalized confusion matrix (rows: true, columns: predicted) as PNG."""
    matrix = _as_matrix(conf_mat, class_order)
    normalized = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    path = Path(output_directory) / f"{output_prefix}{CONFUSION_SUFFIX}"
    _heatmap(normalized, class_order, class_order, "Confusion matrix (row-normalized)", "predicted class", path)
    return path


def plot_predictions(
    predictions_file: str,
    id_class_dict_file: str,
    title: str,
    output_directory: str,
    output_prefix: str,
    class_order: list[str],
) -> Path:
    """Save, per true class, the fraction of its examples predicted as each class (PNG)."""
    saved = safe_load_pickle(predictions_file)
    id_class = read_id_class_dict(id_class_dict_file)
    true = [id_class[i] for i in saved["label_ids"]]
    predicted = [id_class[i] for i in saved["predictions"]]
    counts = np.zeros((len(class_order), len(class_order)))
    index = {c: i for i, c in enumerate(class_order)}
    for t, p in zip(true, predicted, strict=True):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    path = Path(output_directory) / f"{output_prefix}_predictions.png"
    _heatmap(shares, class_order, class_order, title, "predicted class", path)
    return path
