"""Masked-gene pretraining: trainer, collators, utilities and the one-call ``pretrain``."""

from .collator import DataCollatorForMaskedGenes, STFormerPreCollator
from .model import BertForMaskedGenes
from .run import PretrainConfig, pretrain
from .setup import choose_closest, make_output_dirs, setup_environment
from .trainer import STFormerPretrainer, load_example_lengths

__all__ = [
    "BertForMaskedGenes",
    "DataCollatorForMaskedGenes",
    "PretrainConfig",
    "STFormerPreCollator",
    "STFormerPretrainer",
    "choose_closest",
    "load_example_lengths",
    "make_output_dirs",
    "pretrain",
    "setup_environment",
]
