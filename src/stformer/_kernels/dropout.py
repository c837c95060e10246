"""Dropout whose mask costs less to draw on CPU.

:class:`Dropout16` draws its mask from 16-bit random numbers, four per 64-bit draw,
which is about three times faster than ``nn.Dropout`` on CPU (random number generation is
its cost); the rate has a resolution of 1/65,536. For bf16 tensors (the linear layers' outputs
under autocast), the native kernel draws the numbers and applies the mask in one pass, and
redraws the same mask from its seed in the backward pass instead of storing it.
"""

from __future__ import annotations

import torch

from . import native


class Dropout16(torch.nn.Dropout):
    """``nn.Dropout`` whose keep mask compares 16-bit random integers with a threshold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input with each element zeroed with probability ``p`` and the rest scaled by 1 / (1 - p)."""
        if not self.training or self.p == 0:
            return x
        if (
            native.NATIVE
            and x.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and x.is_contiguous()
            and self.p < 0.99
        ):
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
    native.dropout_bf16(x.data_ptr(), out.data_ptr(), x.numel(), threshold, scale, seed)
    return out
