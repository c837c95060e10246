"""Pretraining utilities: seeds, output folders, fuzzy option matching, DeepSpeed checks."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from .._config import choose_closest
from .._errors import InputError
from .._warnings import StformerWarning

__all__ = ["check_deepspeed_config", "choose_closest", "make_output_dirs", "setup_environment"]


def setup_environment(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices). Sets no environment variables."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_output_dirs(output_dir: str | Path, run_name: str) -> dict[str, Path]:
    """Create ``output_dir/run_name/{training,logging,model}`` and return the three paths.

    ``training`` holds checkpoints, ``logging`` the logs, ``model`` the final model.

    >>> make_output_dirs("runs", "pbmc")["model"]  # doctest: +SKIP
    PosixPath('runs/pbmc/model')
    """
    if not run_name or Path(run_name).name != run_name:
        msg = f"run_name must be a plain folder name, got {run_name!r}"
        raise InputError(msg)
    base = Path(output_dir) / run_name
    paths = {"training": base / "training", "logging": base / "logging", "model": base / "model"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    return paths


DEEPSPEED_OPTIMIZERS = ("Adam", "AdamW", "Lamb", "OneBitAdam", "OneBitLamb", "ZeroOneAdam", "Adagrad")
DEEPSPEED_SCHEDULERS = ("WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest")


def check_deepspeed_config(config: dict) -> dict:
    """Check the optimizer and scheduler names of a DeepSpeed config; fix near-misses with a warning."""
    config = dict(config)
    for key, supported in (("optimizer", DEEPSPEED_OPTIMIZERS), ("scheduler", DEEPSPEED_SCHEDULERS)):
        section = config.get(key)
        if not section:
            continue
        name = section.get("type", "")
        chosen = choose_closest(name, supported)
        if chosen != name:
            warnings.warn(f"DeepSpeed {key} {name!r} read as {chosen!r}", StformerWarning, stacklevel=2)
        config[key] = {**section, "type": chosen}
    return config
