"""Turn h5ad/loom files into a rank-value token dataset (Hugging Face Arrow) plus lengths.

The work is split by concern: :mod:`._plan` checks each file and maps its genes, :mod:`._encode`
encodes chunks of cells on worker threads, :mod:`._dataset_writer` turns them into Arrow shards;
this module runs them in order and writes the summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._cells import check_file_keys
from .._config import config_or_options
from .._constants import (
    LENGTHS_FILE,
    TOKENIZE_SUMMARY_FILE,
    VOCAB_FILE,
)
from .._errors import InputError
from .._files import atomic_path, load_mapping_file, refuse_existing, write_json, write_pickle
from ..settings import TokenizerConfig
from ..vocab import cell_frame, load_token_dictionary, validate_token_dictionary
from ._dataset_writer import DatasetWriter, chunk_table
from ._encode import encode_file
from ._plan import FilePlan, common_type, plan_file
from ._sources import find_data_files

__all__ = ["TokenizerConfig", "tokenize_data"]


def tokenize_data(
    data: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    gene_medians: Mapping[str, float] | str | Path,
    token_dictionary: Mapping[str, int] | str | Path,
    config: TokenizerConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> dict:
    """Tokenize cells of h5ad/loom files (or folders) into a Hugging Face dataset on disk.

    Each cell becomes ``input_ids``: its expressed vocabulary genes ordered by
    ``count / cell_total * 10,000 / gene_median``, highest first (ties: lower token id first),
    truncated to ``max_length``. Cells with no expressed vocabulary gene are dropped and counted.
    With ``special_tokens`` (by default when the dictionary has ``<cls>`` and ``<eos>``, as
    Geneformer V2's does) each cell starts with ``<cls>`` and ends with ``<eos>``, both within
    ``max_length`` and counted in ``length``.

    ``output_dir`` becomes a dataset for :func:`datasets.load_from_disk` with columns
    ``input_ids``, ``length``, ``cell_id`` (``"<file stem>:<obs name>"``, unique across the
    files), ``obs_name``, the metadata columns (missing values as nulls, one type per column over
    all files) and, in neighborhood mode, ``neighbor_start``; beside the Arrow shards it holds
    ``lengths.pkl`` (one length per example, in order, for ``STFormerPretrainer``),
    ``vocab.json`` and ``tokenize_summary.json``. It is written to a temporary path and renamed
    when complete.

    Options are given as a :class:`TokenizerConfig` or as its fields by keyword.
    Returns the summary (cells kept and dropped, gene and count coverage per file).

    >>> summary = tokenize_data("pbmc.h5ad", "pbmc_tokens", "medians.json",
    ...                         "vocab.json", metadata_columns=["cell_type"])  # doctest: +SKIP
    """
    config = config_or_options(TokenizerConfig, config, options)
    medians = _load_medians(gene_medians)
    vocab = (
        load_token_dictionary(token_dictionary)
        if isinstance(token_dictionary, (str, Path))
        else validate_token_dictionary(token_dictionary)
    )
    files = find_data_files(data)
    check_file_keys(files)
    output_dir = refuse_existing(output_dir, overwrite)

    frame = cell_frame(vocab, config.special_tokens)
    plans = [plan_file(path, medians, vocab, config) for path in files]
    schema = {name: common_type(name, [p.metadata_types[name] for p in plans]) for name in config.column_map().values()}
    total = sum(p.n_cells for p in plans)
    all_lengths: list[np.ndarray] = []
    with atomic_path(output_dir, overwrite=overwrite) as target:
        bar = tqdm(total=total, unit="cell", disable=not progress, desc=f"tokenize ({config.mode})")
        with bar, DatasetWriter(target, config.max_shard_size) as writer:
            for plan in plans:
                for result in encode_file(plan, config, frame):
                    if len(result.lengths):
                        writer.write(chunk_table(result, schema))
                    all_lengths.append(result.lengths)
                    plan.n_tokenized += len(result.lengths)
                    plan.counts_total += result.counts_total
                    plan.counts_covered += result.counts_covered
                    bar.update(result.n_cells)
            if writer.n_rows == 0:
                msg = f"no cell of {[str(f) for f in files]} expresses a vocabulary gene; nothing to write"
                raise InputError(msg)
        summary = _summary(plans, config, len(vocab))
        write_pickle(np.concatenate(all_lengths).tolist(), target / LENGTHS_FILE)
        write_json(vocab, target / VOCAB_FILE)
        write_json(summary, target / TOKENIZE_SUMMARY_FILE)
    return summary


def _load_medians(gene_medians: Mapping[str, float] | str | Path) -> dict[str, float]:
    medians = gene_medians
    if isinstance(gene_medians, (str, Path)):
        medians = load_mapping_file(gene_medians)
    bad = [(g, m) for g, m in dict(medians).items() if not (isinstance(m, (int, float)) and m > 0)]
    if bad:
        msg = f"gene medians must be positive numbers; first offending entry: {bad[0]!r}"
        raise InputError(msg)
    return dict(medians)


def _summary(plans: list[FilePlan], config: TokenizerConfig, vocab_size: int) -> dict:
    files = [
        {
            "file": str(plan.path),
            "n_cells": plan.n_cells,
            "n_tokenized": plan.n_tokenized,
            "n_dropped_empty": plan.n_cells - plan.n_tokenized,
            "gene_coverage": plan.gene_coverage,
            "n_duplicated_gene_ids": plan.n_duplicated_gene_ids,
            "count_coverage": plan.counts_covered / plan.counts_total if plan.counts_total else 0.0,
        }
        for plan in plans
    ]
    settings = {k: v for k, v in asdict(config).items() if k != "gene_mapping"}
    settings["max_length"] = config.length_cap
    return {
        "n_cells": sum(f["n_cells"] for f in files),
        "n_tokenized": sum(f["n_tokenized"] for f in files),
        "n_dropped_empty": sum(f["n_dropped_empty"] for f in files),
        "vocab_size": vocab_size,
        "files": files,
        "config": json.loads(json.dumps(settings, default=str)),
    }
