"""Predictions from a saved classifier."""

from __future__ import annotations

import os

import numpy as np
from datasets import load_from_disk
from transformers import AutoTokenizer

from .._constants import INPUT_IDS, LENGTH
from .trainer import ClassifierTrainer, inference_arguments, predict_in_length_order


def predict_from_checkpoint(
    model_dir: str,
    dataset_path: str,
    classifier_type: str = "sequence",
    batch_size: int = 32,
    num_workers: int = 4,
    return_logits: bool = False,
) -> list[int] | tuple[list[int], np.ndarray] | list[list[int]]:
    """Predict classes for a saved dataset with a fine-tuned model and its tokenizer.

    ``"sequence"``: one class id per example, in dataset order. ``"token"``: per example, a list
    with the class id of each of its tokens. With ``return_logits`` also the logits:
    (n, classes), or (n, longest, classes) for tokens (positions past an example's end hold -100).
    Batches group cells of similar length and are padded to their longest example.
    """
    from .fine_tuning import classification_collator, load_classifier

    model = load_classifier(model_dir, classifier_type)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    data = load_from_disk(str(dataset_path))
    collator = classification_collator(tokenizer, classifier_type)
    workers = min(num_workers, len(os.sched_getaffinity(0)))
    args = inference_arguments(str(model_dir), batch_size, num_workers=workers)
    trainer = ClassifierTrainer(model=model, args=args, data_collator=collator, processing_class=tokenizer)
    columns = [c for c in data.column_names if c not in (INPUT_IDS, LENGTH)]
    logits, _ = predict_in_length_order(trainer, data.remove_columns(columns))
    predicted = logits.argmax(-1)
    if classifier_type == "sequence":
        result = predicted.tolist()
    else:
        lengths = [len(x) for x in data[INPUT_IDS]]
        result = [row[:n].tolist() for row, n in zip(predicted, lengths, strict=True)]
    return (result, logits) if return_logits else result
