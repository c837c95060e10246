"""Token dictionary (vocabulary): gene identifier -> token id, with ``<pad>`` and ``<mask>``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from ._constants import CLS_TOKEN, END_TOKENS, OTHER_SPECIAL_TOKENS, SPECIAL_TOKENS
from ._errors import InputError
from ._files import load_mapping_file, write_mapping


def symbol_mapping(gene_mapping) -> dict[str, str]:
    """A symbol -> gene id mapping given as a dict or a file (JSON, pickle), as a dict; empty for None."""
    if gene_mapping is None:
        return {}
    return dict(gene_mapping if isinstance(gene_mapping, Mapping) else load_mapping_file(gene_mapping))


def gene_symbols(gene_mapping) -> dict[str, str]:
    """Gene id -> symbol, the inverse of :func:`symbol_mapping`; empty for None."""
    return {gene: symbol for symbol, gene in symbol_mapping(gene_mapping).items()}


def token_names(vocab: Mapping[str, int]) -> dict[int, str]:
    """Token id -> gene identifier (or special token), the inverse of the dictionary."""
    return {i: name for name, i in vocab.items()}


def gene_token_ids(genes, vocab: Mapping[str, int], gene_mapping=None) -> list[int]:
    """Token ids of ``genes`` (gene ids, or symbols through ``gene_mapping``); unknown genes are an error."""
    mapping = symbol_mapping(gene_mapping)
    ids = [gene if gene in vocab else mapping.get(gene) for gene in genes]
    unknown = [gene for gene, i in zip(genes, ids, strict=True) if i not in vocab]
    if unknown:
        msg = f"genes {unknown[:5]} are not in the model's vocabulary (give gene ids, or symbols with gene_mapping)"
        raise InputError(msg)
    return [vocab[i] for i in ids]


__all__ = [
    "build_token_dictionary",
    "cell_frame",
    "load_token_dictionary",
    "save_token_dictionary",
    "special_token_ids",
    "validate_token_dictionary",
]


def validate_token_dictionary(token_dict: Mapping, *, source: str = "token dictionary") -> dict:
    """Check a token dictionary and return it as a plain ``dict[str, int]``.

    Requires string tokens, ``<pad>`` and ``<mask>`` present, and ids that are unique,
    non-negative and dense (``0 .. len - 1``).
    """
    if not isinstance(token_dict, Mapping) or not token_dict:
        msg = f"{source}: expected a non-empty mapping of token -> id, got {type(token_dict).__name__}"
        raise InputError(msg)
    bad = [(k, v) for k, v in token_dict.items() if not isinstance(k, str) or type(v) is not int]
    if bad:
        msg = f"{source}: tokens must be strings and ids integers; first offending entry: {bad[0]!r}"
        raise InputError(msg)
    missing = [t for t in SPECIAL_TOKENS if t not in token_dict]
    if missing:
        msg = (
            f"{source}: special token(s) {missing} missing; add them (for example with "
            "build_token_dictionary, which puts <pad>=0 and <mask>=1 first)"
        )
        raise InputError(msg)
    ids = sorted(token_dict.values())
    if ids != list(range(len(ids))):
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        detail = f"duplicated ids {dup}" if dup else f"ids span {ids[0]}..{ids[-1]}"
        msg = f"{source}: ids must be unique, non-negative and dense 0..{len(ids) - 1}; {detail}"
        raise InputError(msg)
    return dict(token_dict)


def load_token_dictionary(path: str | Path) -> dict[str, int]:
    """Load and validate a token dictionary from JSON or a (restricted) pickle.

    Examples
    --------
    >>> vocab = load_token_dictionary("vocab.json")  # doctest: +SKIP
    >>> vocab["<pad>"]  # doctest: +SKIP
    0

    """
    return validate_token_dictionary(load_mapping_file(path), source=str(path))


def save_token_dictionary(token_dict: Mapping[str, int], path: str | Path, *, overwrite: bool = False) -> Path:
    """Validate and write a token dictionary: pickle for ``.pkl``/``.pickle``, JSON otherwise."""
    return write_mapping(validate_token_dictionary(token_dict), path, overwrite=overwrite)


def build_token_dictionary(gene_medians: Mapping[str, float]) -> dict[str, int]:
    """Build a vocabulary from gene medians: ``<pad>``=0, ``<mask>``=1, genes after, sorted by id.

    Examples
    --------
    >>> build_token_dictionary({"GENE_B": 2.0, "GENE_A": 1.0})
    {'<pad>': 0, '<mask>': 1, 'GENE_A': 2, 'GENE_B': 3}

    """
    genes = sorted(g for g in gene_medians if g not in SPECIAL_TOKENS)
    if not genes:
        msg = "gene medians are empty: compute them with `stformer medians` first"
        raise InputError(msg)
    return {token: i for i, token in enumerate([*SPECIAL_TOKENS, *genes])}


def special_token_ids(token_dict: Mapping[str, int]) -> list[int]:
    """Ids of the non-gene tokens: ``<pad>``, ``<mask>``, then ``<cls>``, ``<eos>``, ``<sep>``, ``<unk>`` if present.

    >>> special_token_ids({"<pad>": 0, "<mask>": 1, "<cls>": 2, "G1": 3})
    [0, 1, 2]
    """
    return [token_dict[t] for t in (*SPECIAL_TOKENS, *OTHER_SPECIAL_TOKENS) if t in token_dict]


def cell_frame(token_dict: Mapping[str, int], wanted: bool | None = None) -> tuple[int, int] | None:
    """The (``<cls>``, ``<eos>`` or ``<sep>``) ids that frame each cell (Geneformer V2), or None.

    ``wanted=None``: when the dictionary has both; ``True``: required; ``False``: never.

    >>> cell_frame({"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "G1": 4})
    (2, 3)
    """
    end = next((t for t in END_TOKENS if t in token_dict), None)
    present = CLS_TOKEN in token_dict and end is not None
    if wanted and not present:
        msg = f"special_tokens needs {CLS_TOKEN} and {' or '.join(END_TOKENS)} in the token dictionary; add them"
        raise InputError(msg)
    return (token_dict[CLS_TOKEN], token_dict[end]) if present and wanted is not False else None
