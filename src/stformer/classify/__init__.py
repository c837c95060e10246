"""Cell and gene classification: GenericClassifier, utilities, collators, predictions, plots."""

from .._lazy import lazy_exports

_EXPORTS = {
    "BertForCellClassification": ".model",
    "ClassifyConfig": "..settings",
    "DataCollatorForCellClassification": ".collators",
    "DataCollatorForGeneClassification": ".collators",
    "GenericClassifier": ".classifier",
    "build_custom_tokenizer": "..hf_tokenizer",
    "downsample_and_shuffle": ".data",
    "flatten_list": ".data",
    "label_classes": ".data",
    "load_and_filter": ".data",
    "plot_confusion_matrix": ".plots",
    "plot_predictions": ".plots",
    "predict_from_checkpoint": ".predict",
    "read_id_class_dict": ".labels",
    "remove_rare": ".data",
    "rename_cols": ".data",
    "subsample_by_class": ".data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
