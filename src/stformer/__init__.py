"""stformer: transformer foundation models for single-cell and spatial transcriptomics."""

from .classify import (
    BertForCellClassification,
    DataCollatorForCellClassification,
    DataCollatorForGeneClassification,
    GenericClassifier,
    downsample_and_shuffle,
    flatten_list,
    label_classes,
    load_and_filter,
    plot_confusion_matrix,
    plot_predictions,
    predict_from_checkpoint,
    remove_rare,
    rename_cols,
    subsample_by_class,
)
from .hf_tokenizer import build_custom_tokenizer
from .pretrain import (
    BertForMaskedGenes,
    DataCollatorForMaskedGenes,
    PretrainConfig,
    STFormerPreCollator,
    STFormerPretrainer,
    choose_closest,
    load_example_lengths,
    make_output_dirs,
    pretrain,
    setup_environment,
)
from .tokenize import TokenizerConfig, compute_gene_medians, tokenize_data, write_gene_medians
from .tokenize._common import InputOptions
from .vocab import (
    build_token_dictionary,
    load_token_dictionary,
    save_token_dictionary,
    validate_token_dictionary,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "BertForCellClassification",
    "BertForMaskedGenes",
    "DataCollatorForCellClassification",
    "DataCollatorForGeneClassification",
    "GenericClassifier",
    "downsample_and_shuffle",
    "flatten_list",
    "label_classes",
    "load_and_filter",
    "plot_confusion_matrix",
    "plot_predictions",
    "predict_from_checkpoint",
    "remove_rare",
    "rename_cols",
    "subsample_by_class",
    "DataCollatorForMaskedGenes",
    "InputOptions",
    "PretrainConfig",
    "STFormerPreCollator",
    "STFormerPretrainer",
    "TokenizerConfig",
    "build_custom_tokenizer",
    "build_token_dictionary",
    "choose_closest",
    "compute_gene_medians",
    "load_example_lengths",
    "load_token_dictionary",
    "make_output_dirs",
    "pretrain",
    "save_token_dictionary",
    "setup_environment",
    "tokenize_data",
    "validate_token_dictionary",
    "write_gene_medians",
]
