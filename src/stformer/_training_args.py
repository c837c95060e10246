"""``training_args`` written for older transformers (Geneformer's examples): translated or explained."""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from typing import Any

from ._errors import InputError
from ._warnings import StformerWarning

# Renamed in transformers 5: old name -> (new name, how the value carries over).
RENAMED = {
    "evaluation_strategy": ("eval_strategy", lambda v: v),
    "warmup_ratio": ("warmup_steps", float),  # a warmup_steps below 1 is a fraction of the steps
    "group_by_length": ("train_sampling_strategy", lambda v: "group_by_length" if v else "random"),
    "no_cuda": ("use_cpu", bool),
    "per_gpu_train_batch_size": ("per_device_train_batch_size", int),
    "per_gpu_eval_batch_size": ("per_device_eval_batch_size", int),
}
# Removed without a direct successor: old name -> what to do instead.
REMOVED = {
    "overwrite_output_dir": "stformer writes its outputs atomically; pass overwrite=True (--overwrite) instead",
    "logging_dir": "the log history is written to log_history.json in the output folder",
    "save_safetensors": "models are always saved as safetensors",
    "fp16_backend": "use bf16 or fp16 alone",
    "use_mps_device": "the device is chosen automatically",
    "tpu_num_cores": "TPUs are not supported",
}


def translate_training_args(training_args: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``training_args`` against ``TrainingArguments``; translate renamed options with a warning.

    >>> translate_training_args({"warmup_ratio": 0.1})  # doctest: +SKIP
    {'warmup_steps': 0.1}
    """
    from transformers import TrainingArguments

    fields = [f.name for f in dataclasses.fields(TrainingArguments)]
    result = {}
    for key, value in (training_args or {}).items():
        if key in fields:
            result[key] = value
        elif key in RENAMED:
            new, convert = RENAMED[key]
            result[new] = convert(value)
            warnings.warn(
                f"training_args: {key!r} is now {new!r} in transformers 5; using {new}={result[new]!r}",
                StformerWarning,
                stacklevel=3,
            )
        else:
            close = difflib.get_close_matches(key, fields, n=1)
            fix = REMOVED.get(key) or (f"did you mean {close[0]!r}?" if close else "see TrainingArguments")
            msg = f"training_args: {key!r} is not an option of transformers' TrainingArguments; {fix}"
            raise InputError(msg)
    return result
