"""The forward pass of every encoder inference path (cell embeddings, perturbations): device, precision, padding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ._constants import INPUT_IDS
from ._datasets import pad_right
from ._distributed import device_for
from ._errors import InputError
from ._hardware import bf16_is_fast
from ._kernels import use_fast_kernels
from .checkpoints import ModelFolder, fit_to_model, load_encoder, open_model_folder


def encoder_on(folder, device_option: str = "auto") -> tuple[torch.nn.Module, torch.device]:
    """The encoder of an opened model folder on this rank's device (``"auto"``: CUDA when present), fast CPU kernels on.

    >>> model, device = encoder_on(open_model_folder("runs/pbmc/model"))  # doctest: +SKIP
    """
    device = device_for(device_option)
    return use_fast_kernels(load_encoder(folder).to(device)), device


def open_for_inference(
    model_dir, tokens, token_dictionary=None, device_option: str = "auto", bf16: bool | None = None
) -> tuple[object, ModelFolder, torch.nn.Module, torch.device, bool]:
    """What every encoder inference path starts with: the tokens, the checked model folder, its encoder, bf16 or not.

    ``tokens``: a token dataset folder or a ``datasets.Dataset``. The model folder is checked
    against the dictionary and the tokens (:func:`~stformer.checkpoints.open_model_folder`), the
    cells against the model (:func:`~stformer.checkpoints.fit_to_model`); the encoder goes to this
    rank's device with the fast kernels; ``bf16`` None means where the device is fast at it.
    Returns ``(data, folder, model, device, bf16)``.
    """
    from datasets import load_from_disk

    on_disk = isinstance(tokens, (str, Path))
    data = load_from_disk(str(tokens)) if on_disk else tokens
    if INPUT_IDS not in data.column_names or len(data) == 0:
        where = tokens if on_disk else "the token dataset"
        msg = f"{where}: expected a non-empty token dataset with an {INPUT_IDS!r} column"
        raise InputError(msg)
    folder = open_model_folder(model_dir, token_dictionary, tokens=tokens if on_disk else None)
    data = fit_to_model(data, folder, source=str(tokens) if on_disk else "the token dataset")
    model, device = encoder_on(folder, device_option)
    return data, folder, model, device, bf16_is_fast(device.type) if bf16 is None else bf16


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


__all__ = ["encoder_on", "hidden_states", "open_for_inference"]
