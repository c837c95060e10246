"""Cell and gene classification: GenericClassifier, utilities, collators, predictions, plots."""

from ..hf_tokenizer import build_custom_tokenizer
from .classifier import GenericClassifier, read_id_class_dict
from .collators import DataCollatorForCellClassification, DataCollatorForGeneClassification
from .data import (
    downsample_and_shuffle,
    flatten_list,
    label_classes,
    load_and_filter,
    remove_rare,
    rename_cols,
    subsample_by_class,
)
from .model import BertForCellClassification
from .plots import plot_confusion_matrix, plot_predictions
from .predict import predict_from_checkpoint

__all__ = [
    "BertForCellClassification",
    "DataCollatorForCellClassification",
    "DataCollatorForGeneClassification",
    "GenericClassifier",
    "build_custom_tokenizer",
    "downsample_and_shuffle",
    "flatten_list",
    "label_classes",
    "load_and_filter",
    "plot_confusion_matrix",
    "plot_predictions",
    "predict_from_checkpoint",
    "read_id_class_dict",
    "remove_rare",
    "rename_cols",
    "subsample_by_class",
]
