"""The forward pass of every encoder inference path (cell embeddings, perturbations): device, precision, padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._datasets import pad_right
from ._distributed import device_for
from ._kernels import use_fast_kernels
from .checkpoints import load_encoder


def encoder_on(folder, device_option: str = "auto") -> tuple[torch.nn.Module, torch.device]:
    """The encoder of an opened model folder on this rank's device (``"auto"``: CUDA when present), fast CPU kernels on.

    >>> model, device = encoder_on(open_model_folder("runs/pbmc/model"))  # doctest: +SKIP
    """
    device = device_for(device_option)
    return use_fast_kernels(load_encoder(folder).to(device)), device


def hidden_states(
    model, sequences: Sequence[Sequence[int]], layer: int, pad_id: int, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``layer``'s hidden states of a batch, padded on the right to its longest sequence.

    Runs on the model's device, under bf16 autocast when ``bf16``. Returns ``(states, ids, mask)``
    on the CPU: (batch, width, hidden) float32, and (batch, width) int64 token ids and attention mask.
    """
    device = next(model.parameters()).device
    ids, mask = pad_right(sequences, pad_id)  # (batch, width)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
    return out.hidden_states[layer].float().cpu(), ids, mask


__all__ = ["encoder_on", "hidden_states"]
