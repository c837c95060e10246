"""Tokenization: gene medians, rank-value encoding, spatial neighborhoods."""

from ..settings import InputOptions, MediansConfig, TokenizerConfig
from .inputs import check_input_files, forget_input_files, read_coordinates, read_expression, read_neighbor_expression
from .medians import compute_gene_medians, write_gene_medians
from .tokenizer import tokenize_data

__all__ = [
    "InputOptions",
    "MediansConfig",
    "TokenizerConfig",
    "check_input_files",
    "compute_gene_medians",
    "forget_input_files",
    "read_coordinates",
    "read_expression",
    "read_neighbor_expression",
    "tokenize_data",
    "write_gene_medians",
]
