"""stformer: transformer foundation models for single-cell and spatial transcriptomics."""

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
    "InputOptions",
    "TokenizerConfig",
    "build_token_dictionary",
    "compute_gene_medians",
    "load_token_dictionary",
    "save_token_dictionary",
    "tokenize_data",
    "validate_token_dictionary",
    "write_gene_medians",
]
