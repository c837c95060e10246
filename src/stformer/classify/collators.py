"""Batch collators for cell (sequence) and gene (token) classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import DataCollatorWithPadding

from .._constants import IGNORE_INDEX


def _input_ids(features: list[Mapping[str, Any]], max_length: int | None) -> list[dict]:
    return [{"input_ids": list(f["input_ids"])[:max_length] if max_length else f["input_ids"]} for f in features]


class DataCollatorForCellClassification(DataCollatorWithPadding):
    """Pad ``input_ids`` (right), add ``attention_mask``, stack each example's ``label``.

    ``padding="max_length"`` pads every batch to ``max_length`` (the specification's default);
    ``"longest"`` pads to the longest example of the batch, which is what
    ``GenericClassifier`` uses. Sequences longer than ``max_length`` are truncated. Other
    columns (metadata, lengths) are ignored.
    """

    def __init__(self, tokenizer, padding: str = "max_length", max_length: int = 2048):
        super().__init__(tokenizer=tokenizer, padding=padding, max_length=max_length)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Batch of (batch, seq) ``input_ids``/``attention_mask`` and (batch,) ``labels``."""
        labels = [f["label"] for f in features if "label" in f]
        batch = self.tokenizer.pad(
            _input_ids(features, self.max_length),
            padding=self.padding,
            max_length=self.max_length if self.padding == "max_length" else None,
            return_tensors="pt",
        )
        batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if labels:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


class DataCollatorForGeneClassification:
    """Pad ``input_ids`` with the tokenizer and per-token ``labels`` with ``label_pad_token_id``."""

    def __init__(
        self,
        tokenizer,
        padding: str = "longest",
        max_length: int | None = None,
        label_pad_token_id: int = IGNORE_INDEX,
        return_tensors: str = "pt",
    ):
        self.tokenizer = tokenizer
        self.padding = padding
        self.max_length = max_length
        self.label_pad_token_id = label_pad_token_id
        self.return_tensors = return_tensors

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Batch of (batch, seq) ``input_ids``, ``attention_mask`` and ``labels``."""
        batch = self.tokenizer.pad(
            _input_ids(features, self.max_length),
            padding=self.padding,
            max_length=self.max_length if self.padding == "max_length" else None,
            return_tensors=self.return_tensors,
        )
        batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "labels" in features[0]:
            width = batch["input_ids"].shape[1]
            labels = torch.full((len(features), width), self.label_pad_token_id, dtype=torch.long)
            for row, f in enumerate(features):
                values = list(f["labels"])[:width]
                labels[row, : len(values)] = torch.tensor(values, dtype=torch.long)
            batch["labels"] = labels
        return batch
