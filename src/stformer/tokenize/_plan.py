"""Planning: open each input file, check it, map its genes onto the vocabulary, read its metadata types."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._cells import repeated_obs_names
from .._constants import TARGET_SUM
from .._errors import InputError, InputKeyError
from .._warnings import StformerWarning
from ..settings import TokenizerConfig
from ._common import check_counts, chunk_totals, gene_ids_of, stored_totals
from ._genes import ColumnMap
from ._sources import CountSource, open_source


@dataclass
class FilePlan:
    """A checked input file: how its genes map onto the vocabulary, and counters."""

    path: Path
    columns: ColumnMap  # file genes -> token ids, weighted by target_sum / median
    n_cells: int
    gene_coverage: float
    metadata_types: dict[str, pa.DataType]  # dataset column -> Arrow type of its values in this file
    n_duplicated_gene_ids: int  # matrix columns whose identifier repeats an earlier column's
    n_tokenized: int = 0
    counts_total: float = 0.0
    counts_covered: float = 0.0


def plan_file(
    path: Path,
    medians: Mapping[str, float],
    vocab: Mapping[str, int],
    config: TokenizerConfig,
) -> FilePlan:
    """Open a file, map its genes onto the vocabulary, check a first chunk, build its graph."""
    with open_source(path, layer=config.layer, gene_id_column=config.gene_id_column) as src:
        gene_ids = gene_ids_of(src, config)
        known = {g for g in gene_ids if g in vocab and g in medians}
        gene_coverage = float(np.isin(gene_ids, list(known)).mean()) if len(gene_ids) else 0.0
        if not known:
            msg = _coverage_message(path, gene_ids, 0.0, 0.0, config)
            raise InputError(msg)
        columns = ColumnMap.build(
            gene_ids,
            {g: vocab[g] for g in known},
            len(vocab),
            duplicates=config.duplicate_genes,
            weights={g: TARGET_SUM / medians[g] for g in known},
            source=str(path),
        )
        totals = stored_totals(src, config)
        metadata_types = {}
        for column, name in config.column_map().items():
            values = src.obs_column(column)
            if values is None:
                msg = f"{path}: obs column {column!r} (asked for in metadata_columns) not found"
                raise InputKeyError(msg)
            metadata_types[name] = arrow_values(values).type
        repeated = repeated_obs_names(src.obs_names())
        if repeated:
            warnings.warn(
                f"{path}: {repeated} obs names repeat an earlier one; their cell ids get -1, -2, ... "
                "(AnnData.obs_names_make_unique gives the same names)",
                StformerWarning,
                stacklevel=3,
            )
        if columns.n_duplicated and config.duplicate_genes != "error":
            rule = "summed" if config.duplicate_genes == "sum" else "all but the first dropped"
            warnings.warn(
                f"{path}: {columns.n_duplicated} matrix columns repeat a vocabulary gene identifier of "
                f"an earlier column; their counts were {rule} (duplicate_genes={config.duplicate_genes!r})",
                StformerWarning,
                stacklevel=3,
            )
        first = src.read_rows(0, min(1024, src.n_obs))  # a sample for the input checks
        check_counts(src, first, chunk_totals(totals, first, slice(0, first.shape[0])), config)
        total = first.sum()
        count_coverage = columns.apply(first)[1] / total if total else 1.0
        if count_coverage < config.min_count_coverage:
            msg = _coverage_message(path, gene_ids, gene_coverage, count_coverage, config)
            raise InputError(msg)
        if config.mode == "neighborhood":
            _check_neighbor_inputs(src, config)
        return FilePlan(
            path=path,
            columns=columns,
            n_cells=src.n_obs,
            gene_coverage=gene_coverage,
            metadata_types=metadata_types,
            n_duplicated_gene_ids=columns.n_duplicated,
        )


def _coverage_message(path: Path, gene_ids: np.ndarray, genes: float, counts: float, config: TokenizerConfig) -> str:
    example = list(gene_ids[:3])
    looks_ensembl = np.mean(np.char.startswith(gene_ids.astype(str), "ENS")) > 0.5
    cause = (
        "the file has Ensembl-like ids: check the species of the vocabulary"
        if looks_ensembl
        else "the file looks like it uses gene symbols: give gene_id_column= for a var column of "
        "Ensembl ids, or gene_mapping= (symbol -> Ensembl)"
    )
    return (
        f"{path}: the vocabulary covers {genes:.1%} of the file's genes and {counts:.1%} of its "
        f"counts (minimum {config.min_count_coverage:.0%} of counts); file gene ids look like "
        f"{example}. Likely cause: {cause}."
    )


def _check_neighbor_inputs(src: CountSource, config: TokenizerConfig) -> None:
    """Fail early when the coordinates, sample column or stored graph are missing."""
    if config.connectivities_key is not None:
        if src.obsp(config.connectivities_key) is None:
            msg = f"{src.path}: obsp[{config.connectivities_key!r}] not found"
            raise InputKeyError(msg)
        return
    if src.obsm(config.spatial_key) is None:
        msg = (
            f"{src.path}: obsm[{config.spatial_key!r}] (spatial coordinates) not found; needed "
            "in neighborhood mode. Set spatial_key= or connectivities_key="
        )
        raise InputKeyError(msg)
    if config.sample_column is not None and src.obs_column(config.sample_column) is None:
        msg = f"{src.path}: obs column {config.sample_column!r} (sample_column) not found"
        raise InputKeyError(msg)


def arrow_values(values: np.ndarray) -> pa.Array:
    """Metadata values as Arrow, missing values (NaN, None) as nulls."""
    return pa.array(values, from_pandas=True)


def common_type(name: str, types: list[pa.DataType]) -> pa.DataType:
    """One Arrow type for a metadata column over all files: its type, float64 for mixed numbers, else string."""
    found = {t for t in types if not pa.types.is_null(t)}
    if len(found) == 1:
        return found.pop()
    if found and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in found):
        return pa.float64()
    if len(found) > 1:
        warnings.warn(
            f"metadata column {name!r} holds {sorted(map(str, found))} values in different files; it is stored as text",
            StformerWarning,
            stacklevel=3,
        )
    return pa.string()
