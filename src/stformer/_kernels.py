"""Faster CPU kernels for BERT training and inference, switched on by :func:`use_fast_kernels`.

Attention: PyTorch's CPU attention kernel (SDPA) runs at fp32 matrix-multiply speed even for bf16
inputs on CPUs without AMX. :func:`stformer_attention` computes exact attention per block of
queries with bf16 matrix products whose (heads, block, keys) score tile stays in cache, and
recomputes the softmax in the backward pass instead of storing it, so that no (length x length)
matrix is ever kept: about twice the speed of SDPA for sequences of 1,000-2,000 genes on
AVX512-BF16 CPUs, in less memory. The arithmetic is that of attention under bf16 autocast (bf16
scores and probabilities, fp32 softmax and gradient sums). Every case it does not cover (GPU
tensors, fp32, attention dropout, masks other than right padding) goes to SDPA. The softmax of
the score tiles and its backward pass are the native kernels of ``_native.c`` (the softmax three
times PyTorch's bf16 softmax, both within one bf16 rounding step of it) where the package was
built with a C compiler and the CPU has AVX512-BF16 (``NATIVE``), else PyTorch's.

Batches: :func:`encode_in_passes` encodes a CPU batch of more than ``FORWARD_TOKENS`` tokens
(cells x width) as several passes of fewer cells, whose activations stay in cache (1.2-1.6x
faster matrix products for 12-24 cells of 2,048 genes), each pass cut to its longest cell so
that no layer computes padding: the same outputs at every real position.

Dropout: :class:`Dropout16` draws its mask from 16-bit random numbers, four per 64-bit draw,
which is about three times faster than ``nn.Dropout`` on CPU (random number generation is
its cost); the rate has a resolution of 1/65,536. For bf16 tensors (the linear layers' outputs
under autocast), the native kernel draws the numbers and applies the mask in one pass, and
redraws the same mask from its seed in the backward pass instead of storing it.
"""

from __future__ import annotations

from types import MethodType

import torch
from transformers import AttentionInterface, BertModel, Trainer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, bidirectional_mask_function, sdpa_mask

try:  # imported after torch, so that it shares torch's OpenMP threads
    from ._native import AVX512_BF16 as NATIVE
    from ._native import dropout_bf16, softmax_backward_bf16_, softmax_bf16_
except ImportError:  # installed without a C compiler: PyTorch's softmax and dropout
    NATIVE = False

ATTENTION = "stformer"
QUERY_BLOCK = 256
FORWARD_TOKENS = 8192  # most cells x width per encoder pass on CPU


def _example(x, b, n):
    """x[b, :, :n] of x (batch, heads, seq, d) as a contiguous (heads, n, d) tensor.

    CPU bmm copies a non-contiguous operand on every call: once per example instead of per block.
    """
    return x[b, :, :n].contiguous()


def _probs(scaled_q, k):
    """softmax(q k^T) for q (heads, rows, d) already scaled and k (heads, n, d) -> (heads, rows, n)."""
    scores = torch.bmm(scaled_q, k.transpose(1, 2))
    if not (NATIVE and scores.dtype == torch.bfloat16):
        return torch.softmax(scores, dim=-1)
    softmax_bf16_(scores.data_ptr(), scores.numel() // scores.shape[-1], scores.shape[-1])  # in place
    return scores


def _softmax_backward(grad_probs, probs):
    """The gradient of the scores (heads, rows, n) from that of softmax(scores) = probs, in place where native."""
    if not (NATIVE and probs.dtype == torch.bfloat16):
        return torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
    softmax_backward_bf16_(grad_probs.data_ptr(), probs.data_ptr(), probs.numel() // probs.shape[-1], probs.shape[-1])
    return grad_probs


class _BlockedAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v per example over its first ``lengths[b]`` positions; zeros beyond.

    Inputs are (batch, heads, seq, d); the output is (batch, seq, heads, d).
    """

    @staticmethod
    def forward(ctx, query, key, value, lengths, scale):
        """query, key, value: (batch, heads, seq, d) bf16; lengths: list of ints -> (batch, seq, heads, d)."""
        batch, heads, seq, d = query.shape
        out = query.new_empty(batch, seq, heads, d)  # the layout the caller wants
        with torch.autocast("cpu", enabled=False):
            for b, n in enumerate(lengths):
                out[b, n:].zero_()
                k, v = _example(key, b, n), _example(value, b, n)
                for start in range(0, n, QUERY_BLOCK):
                    stop = min(start + QUERY_BLOCK, n)
                    probs = _probs(query[b, :, start:stop] * scale, k)
                    torch.bmm(probs, v, out=out[b, start:stop].transpose(0, 1))
        ctx.save_for_backward(query, key, value)
        ctx.lengths, ctx.scale = lengths, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value = ctx.saved_tensors
        scale, grad_out = ctx.scale, grad_out.transpose(1, 2)  # (batch, heads, seq, d)
        grad_q = torch.empty(query.shape, dtype=query.dtype)
        grad_k = torch.empty(key.shape, dtype=torch.float32)  # sums over query blocks
        grad_v = torch.empty(value.shape, dtype=torch.float32)
        with torch.autocast("cpu", enabled=False):
            for b, n in enumerate(ctx.lengths):
                for grad in (grad_q, grad_k, grad_v):
                    grad[b, :, n:].zero_()  # padding; the rest is written below (no whole-tensor fill)
                k, v = _example(key, b, n), _example(value, b, n)
                for start in range(0, n, QUERY_BLOCK):
                    stop = min(start + QUERY_BLOCK, n)
                    q, g = query[b, :, start:stop] * scale, grad_out[b, :, start:stop].contiguous()
                    probs = _probs(q, k)  # (heads, rows, n)
                    grad_scores = _softmax_backward(torch.bmm(g, v.transpose(1, 2)), probs)
                    torch.bmm(grad_scores, k, out=grad_q[b, :, start:stop])
                    partial_k, partial_v = (
                        torch.bmm(grad_scores.transpose(1, 2), q),
                        torch.bmm(probs.transpose(1, 2), g),
                    )
                    if start == 0:
                        grad_k[b, :, :n], grad_v[b, :, :n] = partial_k, partial_v
                    else:
                        grad_k[b, :, :n] += partial_k
                        grad_v[b, :, :n] += partial_v
        grad_q.mul_(scale)
        return grad_q, grad_k.to(key.dtype), grad_v.to(value.dtype), None, None


def _prefix_lengths(mask: torch.Tensor | None, batch: int, seq: int) -> list[int] | None:
    """Per-example count of valid positions when ``mask`` (batch, 1, 1, seq) is right padding, else None."""
    if mask is None:
        return [seq] * batch
    if mask.dtype != torch.bool or mask.shape[1:3] != (1, 1):
        return None
    return _right_padding_lengths(mask[:, 0, 0])


def _right_padding_lengths(valid: torch.Tensor) -> list[int] | None:
    """Per-row count of valid positions when ``valid`` (batch, seq) marks a prefix of each row, else None."""
    lengths = valid.sum(-1)
    if not torch.equal(valid.bool(), torch.arange(valid.shape[1], device=valid.device) < lengths[:, None]):
        return None
    return lengths.tolist()


def stformer_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """``transformers`` attention function: blocked bf16 attention on CPU where it applies, else SDPA.

    query, key, value: (batch, heads, seq, d); returns ((batch, seq, heads, d), None).
    """
    lengths = None
    if (
        query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.bfloat16
        and dropout == 0
        and query.shape[2] == key.shape[2]
        and kwargs.get("position_bias") is None
    ):
        lengths = _prefix_lengths(attention_mask, query.shape[0], query.shape[2])
    if lengths is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return _BlockedAttention.apply(query, key, value, lengths, scale), None


def key_padding_mask(*, mask_function=None, attention_mask=None, **kwargs) -> torch.Tensor | None:
    """``transformers`` mask function: (batch, 1, 1, keys) bool for plain padding, SDPA's mask otherwise."""
    if mask_function is not bidirectional_mask_function or attention_mask is None or attention_mask.dim() != 2:
        return sdpa_mask(mask_function=mask_function, attention_mask=attention_mask, **kwargs)
    valid = attention_mask.bool()
    return None if bool(valid.all()) else valid[:, None, None, :]


AttentionInterface.register(ATTENTION, stformer_attention)
AttentionMaskInterface.register(ATTENTION, key_padding_mask)


class Dropout16(torch.nn.Dropout):
    """``nn.Dropout`` whose keep mask compares 16-bit random integers with a threshold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input with each element zeroed with probability ``p`` and the rest scaled by 1 / (1 - p)."""
        if not self.training or self.p == 0:
            return x
        if NATIVE and x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.is_contiguous() and self.p < 0.99:
            return _NativeDropout.apply(x, self.p)
        draws = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64, device=x.device)
        bits = draws.view(torch.int16)[: x.numel()].view(x.shape)  # uniform on [-32768, 32767]
        keep = bits >= round(self.p * 65536) - 32768
        return x * keep * (1 / (1 - self.p))


class _NativeDropout(torch.autograd.Function):
    """Native dropout of a contiguous bf16 CPU tensor; the backward pass redraws the mask from its seed."""

    @staticmethod
    def forward(ctx, x, p):
        """x: bf16 tensor of any shape; p: drop rate in (0, 0.99) -> x's shape and dtype."""
        seed = int(torch.randint(-(2**63), 2**63 - 1, ())) % 2**64  # from torch's generator: torch.manual_seed applies
        ctx.mask = (round(p * 65536), 1 / (1 - p), seed)
        return _native_dropout(x, *ctx.mask)

    @staticmethod
    def backward(ctx, grad):
        return _native_dropout(grad.contiguous(), *ctx.mask), None


def _native_dropout(x, threshold, scale, seed):
    """The values of x times scale where the draw for their position is >= threshold, else 0 (seeded)."""
    out = torch.empty_like(x)
    dropout_bf16(x.data_ptr(), out.data_ptr(), x.numel(), threshold, scale, seed)
    return out


def encode_in_passes(bert: BertModel, input_ids=None, attention_mask=None, **kwargs):
    """``BertModel.forward`` on input_ids (batch, width) in passes of at most ``FORWARD_TOKENS`` tokens on CPU.

    Consecutive cells form a pass while (cells x the pass's longest cell) fits, and each pass is
    cut to its longest cell when the mask is right padding (as collators pad), so a batch
    sorted by length computes almost no padding. The outputs are those of one pass at every real
    position, zeros at padding (pooler output, hidden states and attentions, concatenated along
    the batch); autograd sees each pass separately, so the backward pass runs in the same pieces.
    :func:`use_fast_kernels` makes it a ``BertModel``'s forward.
    """
    if input_ids is None or input_ids.device.type != "cpu":
        return BertModel.forward(bert, input_ids, attention_mask, **kwargs)
    rows, width = input_ids.shape
    lengths = None if attention_mask is None else _right_padding_lengths(attention_mask)
    passes = _passes([width] * rows if lengths is None else lengths)
    if passes == [(0, rows, width)]:
        return BertModel.forward(bert, input_ids, attention_mask, **kwargs)
    return_dict = kwargs.pop("return_dict", bert.config.return_dict)

    def cut(value, start, stop, cells_width):
        """A batch tensor's rows of the pass, and its sequence columns cut to ``cells_width``."""
        if not (isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == rows):
            return value
        return value[start:stop, :cells_width] if value.dim() > 1 and value.shape[1] == width else value[start:stop]

    parts = [
        _widen(
            BertModel.forward(
                bert,
                **{key: cut(value, *span) for key, value in kwargs.items()},
                input_ids=cut(input_ids, *span),
                attention_mask=cut(attention_mask, *span),
                return_dict=True,
            ),
            width,
        )
        for span in passes
    ]
    output = _concat(parts)
    return output if return_dict else output.to_tuple()


def _passes(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, longest) of runs of consecutive cells whose count x longest length <= ``FORWARD_TOKENS``."""
    spans, start, longest = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and (i + 1 - start) * max(longest, n) > FORWARD_TOKENS:
            spans.append((start, i, longest))
            start, longest = i, 0
        longest = max(longest, n, 1)  # a pass is at least one token wide
    return [*spans, (start, len(lengths), longest)]


def _widen(output, width: int):
    """A pass's ``BertModel`` output with its sequence dimensions zero-padded back to ``width``."""

    def pad(x, dims):
        extra = width - x.shape[dims[0]]
        sizes = [[0, extra if dim in dims else 0] for dim in reversed(range(x.dim()))]  # last dimension first
        return torch.nn.functional.pad(x, sum(sizes, []))

    widened = {"last_hidden_state": pad(output.last_hidden_state, [1])}
    if output.hidden_states is not None:
        widened["hidden_states"] = tuple(pad(x, [1]) for x in output.hidden_states)
    if output.attentions is not None:
        widened["attentions"] = tuple(pad(x, [2, 3]) for x in output.attentions)
    return type(output)(**{**output, **widened})


def _concat(parts):
    """Concatenate model outputs (tensors, tuples or ``ModelOutput`` of them, or None) along the batch."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):  # ModelOutput: only its non-None fields are keys
        return type(first)(**{key: _concat([part[key] for part in parts]) for key in first})
    if isinstance(first, tuple | list):
        return type(first)(_concat(group) for group in zip(*parts, strict=True))
    return first


def use_fast_kernels(model):
    """Switch a model to :func:`stformer_attention` (if it used SDPA), :func:`encode_in_passes` and :class:`Dropout16`.

    Returns the model.

    Weights, checkpoints and results are unchanged (dropout masks are random either way).

    >>> model = use_fast_kernels(BertForMaskedLM(config))  # doctest: +SKIP
    """
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION)
    for module in list(model.modules()):
        if type(module) is BertModel:
            module.forward = MethodType(encode_in_passes, module)
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(module, name, Dropout16(child.p).train(child.training))
    return model


class FastKernelsTrainer(Trainer):
    """``Trainer`` whose model (given or from ``model_init``) uses :func:`use_fast_kernels`."""

    def __init__(self, model=None, *args, **kwargs):
        super().__init__(None if model is None else use_fast_kernels(model), *args, **kwargs)

    def call_model_init(self, trial=None):
        """The Trainer's ``model_init`` call, switched to stformer's attention."""
        return use_fast_kernels(super().call_model_init(trial))
