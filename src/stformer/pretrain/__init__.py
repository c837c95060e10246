"""Masked-gene pretraining: trainer, collators, utilities and the one-call ``pretrain``."""

from .._lazy import lazy_exports

_EXPORTS = {
    "BertForMaskedGenes": ".model",
    "DataCollatorForMaskedGenes": ".collator",
    "PretrainConfig": "..settings",
    "STFormerPreCollator": ".collator",
    "STFormerPretrainer": ".trainer",
    "choose_closest": ".setup",
    "load_example_lengths": ".trainer",
    "make_output_dirs": ".setup",
    "pretrain": ".run",
    "setup_environment": ".setup",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
