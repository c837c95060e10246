"""Tokenization: gene medians, rank-value encoding, spatial neighborhoods."""

from .medians import compute_gene_medians, write_gene_medians
from .tokenizer import TokenizerConfig, tokenize_data

__all__ = ["TokenizerConfig", "compute_gene_medians", "tokenize_data", "write_gene_medians"]
