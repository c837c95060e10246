"""The ranks of a ``torchrun`` / ``accelerate launch`` run, for work that stformer shards itself."""

from __future__ import annotations

import os

import torch


def ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) in a plain process."""
    return (
        tuple(int(os.environ.get(key, "0")) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        if "WORLD_SIZE" in os.environ
        else (0, 1, 0)
    )


def device_for(option: str) -> torch.device:
    """The device of this rank: CUDA (this rank's GPU) unless ``option`` is ``"cpu"`` or none is visible.

    ``option``: ``"auto"``, ``"cpu"`` or ``"cuda"`` (an error when no CUDA device is visible).
    """
    from ._errors import InputError

    if option == "cuda" and not torch.cuda.is_available():
        msg = "device='cuda' but no CUDA device is visible; use device='auto' or 'cpu'"
        raise InputError(msg)
    if option == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", ranks()[2] % torch.cuda.device_count())


def barrier(device: torch.device) -> None:
    """Wait for every rank (starting the process group on first use); nothing in a plain process."""
    if ranks()[1] == 1:
        return
    distributed = torch.distributed
    if not distributed.is_initialized():
        distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    distributed.barrier()


def all_reduce_sum(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of ``tensor`` (on the CPU) over every rank, back on the CPU; itself in a plain process."""
    if ranks()[1] == 1:
        return tensor
    barrier(device)  # starts the process group
    summed = tensor.to(device)
    torch.distributed.all_reduce(summed)
    return summed.cpu()
