"""stformer's fast CPU kernels and the switch that puts a model on them.

:func:`use_fast_kernels` switches a model to blocked bf16 attention (:mod:`.attention`), encoding
in passes (:mod:`.passes`) and cheaper dropout (:mod:`.dropout`), and back with
``enabled=False``. Weights, checkpoints and results are unchanged (dropout masks are random
either way). ``fast_kernels`` (a field of ``PretrainConfig`` and ``ClassifyConfig``, True by
default) decides whether stformer's trainers switch their models; on GPUs and in fp32 every
kernel hands over to PyTorch's own, so the switch only matters on CPUs.
"""

from __future__ import annotations

import torch
from transformers import BertModel, Trainer

from .attention import ATTENTION, stformer_attention
from .dropout import Dropout16
from .passes import BertModelInPasses, encode_in_passes

__all__ = [
    "ATTENTION",
    "BertModelInPasses",
    "Dropout16",
    "FastKernelsTrainer",
    "encode_in_passes",
    "stformer_attention",
    "use_fast_kernels",
]


def use_fast_kernels(model, enabled: bool = True):
    """Switch ``model`` to stformer's CPU kernels (``enabled``) or back to PyTorch's; returns the model.

    On: SDPA attention becomes :func:`stformer_attention`, each ``BertModel`` a
    :class:`BertModelInPasses`, each ``nn.Dropout`` a :class:`Dropout16`. Off: the reverse.

    >>> model = use_fast_kernels(BertForMaskedLM(config))  # doctest: +SKIP
    >>> model = use_fast_kernels(model, enabled=False)  # PyTorch's kernels again  # doctest: +SKIP
    """
    attention = getattr(model.config, "_attn_implementation", None)
    if attention == ("sdpa" if enabled else ATTENTION):
        model.set_attn_implementation(ATTENTION if enabled else "sdpa")
    encoder, fast_encoder = (BertModel, BertModelInPasses) if enabled else (BertModelInPasses, BertModel)
    dropout, fast_dropout = (torch.nn.Dropout, Dropout16) if enabled else (Dropout16, torch.nn.Dropout)
    for module in list(model.modules()):
        if type(module) is encoder:
            module.__class__ = fast_encoder
            _register_recorded_outputs(module)
        for name, child in module.named_children():
            if type(child) is dropout:
                setattr(module, name, fast_dropout(child.p).train(child.training))
    return model


def _register_recorded_outputs(module) -> None:
    """Let ``output_hidden_states`` and ``output_attentions`` work for a module whose class was switched.

    transformers (5.2x) registers, per model class, which outputs its forward can record, when a
    model is built; the switched class is registered here the same way.
    """
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # transformers that read _can_record_outputs from the model itself
        return
    dict.__setitem__(_CAN_RECORD_REGISTRY, str(module.__class__), module._can_record_outputs)  # keyed as 5.19-5.24 do


class FastKernelsTrainer(Trainer):
    """``Trainer`` whose model (given or from ``model_init``) runs on :func:`use_fast_kernels` if ``fast_kernels``."""

    def __init__(self, model=None, *args, fast_kernels: bool = True, **kwargs):
        self.fast_kernels = fast_kernels
        super().__init__(None if model is None else use_fast_kernels(model, fast_kernels), *args, **kwargs)

    def call_model_init(self, trial=None):
        """The Trainer's ``model_init`` call, switched to stformer's kernels if ``fast_kernels``."""
        return use_fast_kernels(super().call_model_init(trial), self.fast_kernels)
