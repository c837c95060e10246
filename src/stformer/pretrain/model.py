"""BERT for masked-gene pretraining: the prediction head runs only at masked positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from .collator import IGNORE_INDEX


class BertForMaskedGenes(BertForMaskedLM):
    """``BertForMaskedLM`` whose vocabulary projection runs only where ``labels != -100``.

    With 15% of tokens masked this skips ~85% of the largest matrix product (hidden x vocab).
    With labels, ``logits`` has shape (n_masked, vocab) in row-major order of the masked
    positions; without labels it is the usual (batch, seq, vocab). The weights are exactly
    those of ``BertForMaskedLM``, and checkpoints load with it (``architectures`` says so).
    """

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Masked-LM loss (mean over masked tokens, or sum / ``num_items_in_batch``)."""
        if labels is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
        masked = labels != IGNORE_INDEX  # (batch, seq)
        logits = self.cls(hidden[masked])  # (n_masked, vocab)
        loss = F.cross_entropy(logits.float(), labels[masked], reduction="sum")
        divisor = num_items_in_batch if num_items_in_batch is not None else masked.sum().clamp(min=1)
        return MaskedLMOutput(loss=loss / divisor, logits=logits)

    def save_pretrained(self, *args, **kwargs) -> None:
        """Save as a plain ``BertForMaskedLM`` checkpoint (safetensors + config)."""
        self.config.architectures = ["BertForMaskedLM"]
        super().save_pretrained(*args, **kwargs)


def bert_config(
    vocab_size: int,
    pad_token_id: int,
    *,
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    intermediate_size: int,
    max_length: int,
    activation: str,
    hidden_dropout: float,
    attention_dropout: float,
) -> BertConfig:
    """BERT configuration for a gene vocabulary (no token types; SDPA attention)."""
    if hidden_size % num_heads:
        msg = f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})"
        raise ValueError(msg)
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_act=activation,
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=max_length,
        type_vocab_size=1,
        pad_token_id=pad_token_id,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
    )
