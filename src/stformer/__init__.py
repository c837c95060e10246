"""stformer: transformer foundation models for single-cell and spatial transcriptomics."""

from ._lazy import lazy_exports

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "BertForCellClassification": ".classify",
    "BertForMaskedGenes": ".pretrain",
    "ClassifyConfig": ".classify",
    "EmbedConfig": ".embedding",
    "MediansConfig": ".tokenize",
    "PerturbConfig": ".settings",
    "perturb": ".perturbation",
    "RunConfig": ".settings",
    "DataCollatorForCellClassification": ".classify",
    "DataCollatorForGeneClassification": ".classify",
    "GenericClassifier": ".classify",
    "downsample_and_shuffle": ".classify",
    "embed": ".embedding",
    "read_embeddings": ".embedding",
    "write_embeddings": ".embedding",
    "flatten_list": ".classify",
    "label_classes": ".classify",
    "load_and_filter": ".classify",
    "plot_confusion_matrix": ".classify",
    "plot_predictions": ".classify",
    "predict_from_checkpoint": ".classify",
    "remove_rare": ".classify",
    "rename_cols": ".classify",
    "subsample_by_class": ".classify",
    "DataCollatorForMaskedGenes": ".pretrain",
    "InputError": "._errors",
    "InputOptions": ".tokenize",
    "PretrainConfig": ".pretrain",
    "STFormerPreCollator": ".pretrain",
    "STFormerPretrainer": ".pretrain",
    "TokenizerConfig": ".tokenize",
    "build_custom_tokenizer": ".hf_tokenizer",
    "build_token_dictionary": ".vocab",
    "choose_closest": ".pretrain",
    "compute_gene_medians": ".tokenize",
    "load_example_lengths": ".pretrain",
    "load_token_dictionary": ".vocab",
    "make_output_dirs": ".pretrain",
    "save_token_dictionary": ".vocab",
    "setup_environment": ".pretrain",
    "tokenize_data": ".tokenize",
    "validate_token_dictionary": ".vocab",
    "write_gene_medians": ".tokenize",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
