"""Turn h5ad/loom files into a rank-value token dataset (Hugging Face Arrow) plus lengths."""

from __future__ import annotations

import json
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from .._cells import cell_ids, check_file_keys, repeated_obs_names
from .._config import build_config
from .._constants import (
    CELL_ID,
    INPUT_IDS,
    LENGTH,
    LENGTHS_FILE,
    NEIGHBOR_START,
    OBS_NAME,
    TARGET_SUM,
    TOKENIZE_SUMMARY_FILE,
    VOCAB_FILE,
)
from .._errors import InputError, InputKeyError
from .._files import atomic_path, load_mapping_file, write_json, write_pickle
from .._warnings import StformerWarning
from ..settings import TokenizerConfig
from ..vocab import load_token_dictionary, validate_token_dictionary
from ._common import check_counts, chunk_totals, gene_ids_of, stored_totals
from ._dataset_writer import DatasetWriter
from ._sources import ColumnMap, CountSource, find_data_files, open_source
from .neighbors import graph_from_connectivities, spatial_graph
from .ranking import concat_ragged, neighbor_sums, rank_value_encode, scale_rows

__all__ = ["TokenizerConfig", "tokenize_data"]


@dataclass
class _FilePlan:
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


@dataclass
class _OpenFile:
    """A file opened for tokenizing: the reader plus per-cell arrays read once."""

    plan: _FilePlan
    source: CountSource  # h5py serializes reads across worker threads
    totals: np.ndarray | None  # (cells,) stored totals, or None to use row sums
    graph: sp.csr_matrix | None  # (cells, cells) neighbor graph in neighborhood mode
    metadata: dict[str, np.ndarray]  # dataset column -> (cells,) values


def _encode_chunk(file: _OpenFile, start: int, stop: int, config: TokenizerConfig) -> dict:
    """Tokenize cells ``start:stop`` of one file; returns tokens, lengths and counters."""
    counts = file.source.read_rows(start, stop)  # (cells, file genes)
    totals = chunk_totals(file.totals, counts, slice(start, stop))
    check_counts(file.source, counts, totals, config, first_row=start)
    keep = totals > 0
    weighted, covered = file.plan.columns.apply(counts if keep.all() else counts[keep])
    own = scale_rows(weighted, 1.0 / totals[keep])  # (cells, vocab)
    if config.mode == "spot":
        tokens, lengths = rank_value_encode(own, config.length_cap)
        neighbor_start = None
    else:
        nb_values = _neighborhood_values(file, np.arange(start, stop)[keep])
        nb_count = np.diff(nb_values.indptr)
        own_cap = config.length_cap - np.minimum(nb_count, config.length_cap // 2)
        own_part = rank_value_encode(own, own_cap)
        nb_part = rank_value_encode(nb_values, config.length_cap - own_part[1])
        tokens, lengths = concat_ragged(own_part, nb_part)
        neighbor_start = own_part[1]
    rows = np.flatnonzero(keep)
    if neighbor_start is None:
        nonempty = lengths > 0
    else:
        nonempty = neighbor_start > 0
        neighbor_start = neighbor_start[nonempty]
    tokens, lengths = _select_rows(tokens, lengths, nonempty)
    return {
        "n_cells": stop - start,
        "rows": start + rows[nonempty],
        "tokens": tokens,
        "lengths": lengths,
        "neighbor_start": neighbor_start,
        "counts_total": float(counts.data[np.repeat(keep, np.diff(counts.indptr))].sum()),
        "counts_covered": covered,
    }


def _neighborhood_values(file: _OpenFile, cells: np.ndarray) -> sp.csr_matrix:
    """Normalized summed counts of each cell's neighbors (cells, vocab genes)."""
    adjacency = file.graph[cells]  # (cells, all cells)
    members = np.unique(adjacency.indices)
    neighbor_counts = file.source.take_rows(members)  # (members, file genes)
    local = sp.csr_matrix(
        (adjacency.data, np.searchsorted(members, adjacency.indices), adjacency.indptr),
        shape=(len(cells), len(members)),
    )
    member_totals = chunk_totals(file.totals, neighbor_counts, members)
    summed = neighbor_sums(local, file.plan.columns.apply(neighbor_counts)[0])  # (cells, vocab)
    summed_totals = local @ member_totals  # (cells,)
    inverse = np.divide(1.0, summed_totals, out=np.zeros(len(cells)), where=summed_totals > 0)
    return scale_rows(summed, inverse)


def _select_rows(tokens: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if keep.all():
        return tokens, lengths
    return tokens[np.repeat(keep, lengths)], lengths[keep]


def _plan_file(
    path: Path,
    medians: Mapping[str, float],
    vocab: Mapping[str, int],
    config: TokenizerConfig,
) -> _FilePlan:
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
            metadata_types[name] = _arrow_values(values).type
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
        return _FilePlan(
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


def _neighbor_graph(src: CountSource, config: TokenizerConfig) -> sp.csr_matrix:
    """The file's neighbor graph (cells, cells): stored, or built per sample."""
    if config.connectivities_key is not None:
        return graph_from_connectivities(src.obsp(config.connectivities_key))
    samples = None
    if config.sample_column is not None:
        samples = np.asarray(src.obs_column(config.sample_column)).astype(str)
    return spatial_graph(src.obsm(config.spatial_key), samples, n_neighbors=config.n_neighbors, radius=config.radius)


def _encode_file(plan: _FilePlan, config: TokenizerConfig) -> Iterator[dict]:
    """Open one file and yield its encoded chunks in order (worker threads when nproc > 1)."""
    with open_source(plan.path, layer=config.layer, gene_id_column=config.gene_id_column) as src:
        names = src.obs_names()
        metadata = {CELL_ID: cell_ids(plan.path, names), OBS_NAME: names}
        metadata.update({new: src.obs_column(old) for old, new in config.column_map().items()})
        file = _OpenFile(
            plan=plan,
            source=src,
            totals=stored_totals(src, config),
            graph=_neighbor_graph(src, config) if config.mode == "neighborhood" else None,
            metadata=metadata,
        )
        size = config.chunk_size
        chunks = [(s, min(s + size, plan.n_cells)) for s in range(0, plan.n_cells, size)]
        for result in _ordered_map(lambda c: _encode_chunk(file, *c, config), chunks, config.nproc):
            result["metadata"] = {name: values[result["rows"]] for name, values in metadata.items()}
            yield result


def _ordered_map(func: Callable, items: Sequence, workers: int) -> Iterator:
    """``map(func, items)`` on worker threads (NumPy releases the GIL), results in order.

    At most ``2 * workers`` items are in flight, so memory stays bounded.
    """
    if workers == 1:
        yield from map(func, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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
    if config is not None and options:
        msg = "pass either config= or keyword options, not both"
        raise TypeError(msg)
    config = config or build_config(TokenizerConfig, options)
    medians = _load_medians(gene_medians)
    vocab = (
        load_token_dictionary(token_dictionary)
        if isinstance(token_dictionary, (str, Path))
        else validate_token_dictionary(token_dictionary)
    )
    files = find_data_files(data)
    check_file_keys(files)
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        msg = f"{output_dir} already exists; choose another output or pass overwrite=True (--overwrite)"
        raise FileExistsError(msg)

    plans = [_plan_file(path, medians, vocab, config) for path in files]
    schema = {
        name: _common_type(name, [p.metadata_types[name] for p in plans]) for name in config.column_map().values()
    }
    total = sum(p.n_cells for p in plans)
    all_lengths: list[np.ndarray] = []
    with atomic_path(output_dir, overwrite=overwrite) as target:
        bar = tqdm(total=total, unit="cell", disable=not progress, desc=f"tokenize ({config.mode})")
        with bar, DatasetWriter(target, config.max_shard_size) as writer:
            for plan in plans:
                for result in _encode_file(plan, config):
                    if len(result["lengths"]):
                        writer.write(_to_table(result, schema))
                    all_lengths.append(result["lengths"])
                    plan.n_tokenized += len(result["lengths"])
                    plan.counts_total += result["counts_total"]
                    plan.counts_covered += result["counts_covered"]
                    bar.update(result["n_cells"])
            if writer.n_rows == 0:
                msg = f"no cell of {[str(f) for f in files]} expresses a vocabulary gene; nothing to write"
                raise InputError(msg)
        summary = _summary(plans, config, len(vocab))
        write_pickle(np.concatenate(all_lengths).tolist(), target / LENGTHS_FILE)
        write_json(vocab, target / VOCAB_FILE)
        write_json(summary, target / TOKENIZE_SUMMARY_FILE)
    return summary


def _arrow_values(values: np.ndarray) -> pa.Array:
    """Metadata values as Arrow, missing values (NaN, None) as nulls."""
    return pa.array(values, from_pandas=True)


def _common_type(name: str, types: list[pa.DataType]) -> pa.DataType:
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


def _to_table(result: dict, schema: dict[str, pa.DataType]) -> pa.Table:
    offsets = np.concatenate([[0], np.cumsum(result["lengths"])]).astype(np.int32)
    columns = {
        INPUT_IDS: pa.ListArray.from_arrays(pa.array(offsets), pa.array(result["tokens"])),
        LENGTH: pa.array(result["lengths"], type=pa.int64()),
    }
    if result["neighbor_start"] is not None:
        columns[NEIGHBOR_START] = pa.array(result["neighbor_start"], type=pa.int64())
    for name, values in result["metadata"].items():
        columns[name] = _arrow_values(values).cast(schema.get(name, pa.string()))
    return pa.table(columns)


def _load_medians(gene_medians: Mapping[str, float] | str | Path) -> dict[str, float]:
    medians = gene_medians
    if isinstance(gene_medians, (str, Path)):
        medians = load_mapping_file(gene_medians)
    bad = [(g, m) for g, m in dict(medians).items() if not (isinstance(m, (int, float)) and m > 0)]
    if bad:
        msg = f"gene medians must be positive numbers; first offending entry: {bad[0]!r}"
        raise InputError(msg)
    return dict(medians)


def _summary(plans: list[_FilePlan], config: TokenizerConfig, vocab_size: int) -> dict:
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
