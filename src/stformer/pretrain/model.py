"""BERT for masked-gene pretraining: the prediction head runs only at masked positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from .._constants import IGNORE_INDEX
from .._errors import InputError

LOSS_ROWS = 64  # masked positions per block: (64, vocab) logit tiles are cheap to allocate and convert


class _BlockedGeneLoss(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``labels``, and the argmax.

    Logits are computed for ``LOSS_ROWS`` rows at a time (again in the backward pass) and never
    stored whole in fp32: for 2,000 masked genes and 20,000 genes that is 160 MB, whose allocation
    and copies took a quarter of a step. Products run in ``dtype`` (bf16 under autocast); log-sum-exp
    and the softmax gradient are fp32, as in ``F.cross_entropy(logits.float())``. The backward pass
    keeps the logits' gradient in ``dtype`` (80 MB in bf16 for that example) for two whole products,
    the hidden and the weight gradients: adding a fp32 (vocab, hidden) weight gradient per block was
    as slow as the products themselves.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, dtype):
        """Loss sum and argmax (n,) for hidden (n, h), weight (vocab, h), bias (vocab,), labels (n,)."""
        h, w, b = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
        lse = torch.empty(len(labels), dtype=torch.float32, device=hidden.device)
        target = torch.empty_like(lse)
        predicted = torch.empty_like(labels)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, len(labels), LOSS_ROWS):
                rows = slice(start, start + LOSS_ROWS)
                logits = torch.addmm(b, h[rows], w.t()).float()  # (rows, vocab)
                lse[rows] = torch.logsumexp(logits, dim=-1)
                target[rows] = logits.gather(1, labels[rows, None])[:, 0]
                predicted[rows] = logits.argmax(-1)
        ctx.save_for_backward(h, w, b, labels, lse)
        ctx.dtypes = hidden.dtype, weight.dtype, bias.dtype
        ctx.mark_non_differentiable(predicted)
        return (lse - target).sum(), predicted

    @staticmethod
    def backward(ctx, grad_loss, _grad_predicted):
        h, w, b, labels, lse = ctx.saved_tensors
        grad_logits = torch.empty(len(labels), len(b), dtype=h.dtype, device=h.device)  # (n, vocab)
        grad_b = torch.zeros(b.shape, dtype=torch.float32, device=b.device)
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, len(labels), LOSS_ROWS):
                rows = slice(start, start + LOSS_ROWS)
                logits = torch.addmm(b, h[rows], w.t())
                grad = torch.exp(logits.float() - lse[rows, None])  # softmax (rows, vocab)
                grad[torch.arange(len(grad), device=grad.device), labels[rows]] -= 1
                grad_b.add_(grad.mul_(grad_loss).sum(0))
                grad_logits[rows] = grad
            grad_h = grad_logits @ w  # whole products: one weight gradient, not one per block to add up
            grad_w = grad_logits.t() @ h
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        return grad_h.to(hidden_dtype), grad_w.to(weight_dtype), grad_b.to(bias_dtype), None, None


@dataclass
class MaskedGenesOutput(MaskedLMOutput):
    """``MaskedLMOutput`` plus ``predicted``: the top gene at each masked position, shape (n_masked,)."""

    predicted: torch.Tensor | None = None


class BertForMaskedGenes(BertForMaskedLM):
    """``BertForMaskedLM`` whose vocabulary projection runs only where ``labels != -100``.

    With 15% of tokens masked this skips ~85% of the largest matrix product (hidden x vocab),
    and the loss is computed in blocks of masked positions (:class:`_BlockedGeneLoss`) without
    storing their logits. With labels the output holds ``loss`` and ``predicted`` (the argmax
    gene per masked position, in row-major order); without labels, the usual
    (batch, seq, vocab) ``logits``. The weights are exactly those of ``BertForMaskedLM``, and
    checkpoints load with it (``architectures`` says so).
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
        head = self.cls.predictions
        transformed = head.transform(hidden[masked])  # (n_masked, hidden)
        device = transformed.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else transformed.dtype
        loss, predicted = _BlockedGeneLoss.apply(
            transformed, head.decoder.weight, head.decoder.bias, labels[masked], dtype
        )
        divisor = num_items_in_batch if num_items_in_batch is not None else masked.sum().clamp(min=1)
        return MaskedGenesOutput(loss=loss / divisor, predicted=predicted)

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
        raise InputError(msg)
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


def extend_position_embeddings(model: BertForMaskedLM, length: int) -> None:
    """Lengthen the position embeddings to ``length`` in place; position p >= the old n starts as p mod n.

    In a neighborhood sequence the genes after the cell's own part are ranked afresh, so a
    neighbor part's rank k starting from the embedding of position k is a warm start that
    continued pretraining refines.
    """
    embeddings = model.bert.embeddings
    old = embeddings.position_embeddings.weight.detach()  # (n, hidden)
    grown = torch.nn.Embedding(length, old.shape[1], device=old.device, dtype=old.dtype)
    with torch.no_grad():
        grown.weight.copy_(old[torch.arange(length) % old.shape[0]])  # (length, hidden)
    embeddings.position_embeddings = grown
    embeddings.register_buffer("position_ids", torch.arange(length, device=old.device)[None], persistent=False)
    if hasattr(embeddings, "token_type_ids"):
        embeddings.register_buffer(
            "token_type_ids", torch.zeros(1, length, dtype=torch.long, device=old.device), persistent=False
        )
    model.config.max_position_embeddings = length
