"""Classification metrics and prediction helpers shared by training, evaluation and prediction."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments

from .._datasets import example_lengths
from .._hardware import bf16_is_fast
from .._kernels import FastKernelsTrainer
from .._sampling import LengthGroupedSampler
from .data import IGNORE_INDEX


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


class ClassifierTrainer(FastKernelsTrainer):
    """``Trainer`` that evaluates and predicts in dataset order (no shuffled length grouping).

    Training with ``train_sampling_strategy="group_by_length"`` batches cells of similar length
    (:class:`~stformer._sampling.LengthGroupedSampler`, small datasets included). Evaluation runs
    under bf16 autocast when training does (the Trainer alone evaluates in fp32). Every loss here
    (the model's, or the class-weighted one) is a mean over its batch, so gradient accumulation
    divides it by the number of accumulated batches.
    """

    loss_is_scaled_for_ga = False

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(example_lengths(dataset), batch, self.args.seed)

    def _get_eval_sampler(self, eval_dataset):
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer's prediction step, under bf16 autocast when ``args.bf16``."""
        device = "cuda" if self.args.device.type == "cuda" else "cpu"
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.args.bf16):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def inference_arguments(output_dir: str, batch_size: int, *, num_workers: int = 0) -> TrainingArguments:
    """``TrainingArguments`` of every inference path (evaluation, prediction): one precision rule.

    bf16 autocast where the hardware is fast at it (as in training), else fp32; the GPU when
    there is one.
    """
    return TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        dataloader_num_workers=num_workers,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16_is_fast(),
        disable_tqdm=True,
    )


def predict_in_length_order(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and labels for ``dataset`` in its own order, batching cells of similar length.

    Examples are predicted sorted by length (little padding) and put back in order. Per-token
    outputs of all batches share one width (the Trainer pads them with -100).
    """
    order = np.argsort(-example_lengths(dataset), kind="stable")
    output = trainer.predict(dataset.select(order))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    logits = np.asarray(output.predictions)[inverse]  # (n, k) or (n, longest, k) padded with -100
    labels = None if output.label_ids is None else np.asarray(output.label_ids)[inverse]
    return logits, labels
