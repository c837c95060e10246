"""Classification metrics: accuracy, macro-F1, per class, confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from .._constants import IGNORE_INDEX


def flat_predictions(logits: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted class per labeled item: cells (n, k) or genes (n, seq, k) with -100 labels dropped."""
    predicted = logits.argmax(-1)
    if labels is None:
        return predicted, None
    keep = labels != IGNORE_INDEX
    return predicted[keep], labels[keep]


def compute_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 for ``Trainer(compute_metrics=...)``."""
    predicted, labels = flat_predictions(np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids))
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def full_metrics(labels: np.ndarray, predicted: np.ndarray, class_names: dict[int, str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    The confusion matrix rows are true classes and columns predicted classes, in ``class_order``.
    """
    ids = sorted(class_names)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            class_names[i]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for i, p, r, f, s in zip(ids, precision, recall, f1, support, strict=True)
        },
        "class_order": [class_names[i] for i in ids],
        "confusion_matrix": confusion_matrix(labels, predicted, labels=ids).tolist(),
    }
