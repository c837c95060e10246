"""BERT cell classifier with a choice of cell representation (pooling)."""

from __future__ import annotations

import torch
from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("mean", "first")


class BertForCellClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` whose cell representation is set by ``config.cell_pooling``.

    ``"first"``: the standard BERT head (pooler on the first token; in a rank-value sequence
    that is the top-ranked *gene*, as rank-value sequences carry no ``<cls>`` token).
    ``"mean"`` (default): the mean of the last hidden states over real tokens.

    >>> model = BertForCellClassification.from_pretrained("pretrained", num_labels=10,
    ...                                                   cell_pooling="mean")  # doctest: +SKIP
    """

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Logits (batch, num_labels) and, with ``labels``, the cross-entropy loss."""
        pooling = getattr(self.config, "cell_pooling", "mean")
        if pooling not in POOLINGS:
            msg = f"cell_pooling must be one of {POOLINGS}, got {pooling!r}"
            raise ValueError(msg)
        if pooling == "first":
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]  # (batch, seq, hidden)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (batch, hidden)
        logits = self.classifier(self.dropout(pooled))  # (batch, num_labels)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
