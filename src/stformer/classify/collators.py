"""Batch collators for cell (sequence) and gene (token) classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from .._constants import DEFAULT_MAX_LENGTH, IGNORE_INDEX, INPUT_IDS, LABEL, LABELS


def _input_ids(features: list[Mapping[str, Any]], max_length: int | None) -> list[dict]:
    return [{INPUT_IDS: list(f[INPUT_IDS])[:max_length] if max_length else f[INPUT_IDS]} for f in features]


class DataCollatorForCellClassification(DataCollatorWithPadding):
    """Pad ``input_ids`` (right), add ``attention_mask``, stack each example's ``label``.

    ``padding="max_length"`` pads every batch to ``max_length`` (the specification's default);
    ``"longest"`` pads to the longest example of the batch, which is what
    ``GenericClassifier`` uses. Sequences longer than ``max_length`` are truncated. Other
    columns (metadata, lengths) are ignored.
    """

    def __init__(self, tokenizer, padding: str = "max_length", max_length: int = DEFAULT_MAX_LENGTH["spot"]):
        super().__init__(tokenizer=tokenizer, padding=padding, max_length=max_length)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Batch of (batch, seq) ``input_ids``/``attention_mask`` and (batch,) ``labels``."""
        labels = [f[LABEL] for f in features if LABEL in f]
        batch = self.tokenizer.pad(
            _input_ids(features, self.max_length),
            padding=self.padding,
            max_length=self.max_length if self.padding == "max_length" else None,
            return_tensors="pt",
        )
        batch = {INPUT_IDS: batch[INPUT_IDS], "attention_mask": batch["attention_mask"]}
        if labels:
            batch[LABELS] = torch.tensor(labels, dtype=torch.long)
        return batch


class DataCollatorForGeneClassification(DataCollatorForTokenClassification):
    """Pad ``input_ids`` with the tokenizer and per-token ``labels`` with ``label_pad_token_id``.

    ``transformers``' ``DataCollatorForTokenClassification`` with the specification's signature;
    sequences (and their labels) are cut to ``max_length`` and other columns are ignored.
    """

    def __init__(
        self,
        tokenizer,
        padding: str = "longest",
        max_length: int | None = None,
        label_pad_token_id: int = IGNORE_INDEX,
        return_tensors: str = "pt",
    ):
        super().__init__(
            tokenizer=tokenizer,
            padding=padding,
            max_length=max_length,
            label_pad_token_id=label_pad_token_id,
            return_tensors=return_tensors,
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Batch of (batch, seq) ``input_ids``, ``attention_mask`` and ``labels``."""
        kept = _input_ids(features, self.max_length)
        for item, feature in zip(kept, features, strict=True):
            if LABELS in feature:
                item[LABELS] = list(feature[LABELS])[: len(item[INPUT_IDS])]
        batch = super().__call__(kept)
        return {key: batch[key] for key in (INPUT_IDS, "attention_mask", LABELS) if key in batch}
