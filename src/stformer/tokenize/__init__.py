"""Tokenization: gene medians, rank-value encoding, spatial neighborhoods."""

from ..settings import InputOptions, MediansConfig, TokenizerConfig
from .medians import compute_gene_medians, write_gene_medians
from .tokenizer import tokenize_data

__all__ = [
    "InputOptions",
    "MediansConfig",
    "TokenizerConfig",
    "compute_gene_medians",
    "tokenize_data",
    "write_gene_medians",
]
