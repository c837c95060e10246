"""Reading the input files as the tokenizer does, for the other stages (checks, the report's baseline)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._cells import cell_ids
from .._constants import TARGET_SUM
from .._errors import InputError, InputKeyError
from ..settings import InputOptions, TokenizerConfig
from ._common import chunk_totals, gene_ids_of, stored_totals
from ._genes import ColumnMap
from ._sources import find_data_files, open_source
from .neighbors import file_neighbors
from .ranking import scale_rows

READ_PIECE = 4096  # rows read and transformed at once: bounds the copies made on the way
_PER_FILE: OrderedDict = OrderedDict()  # (what, file, its mtime, settings) -> value; the last 8


def _per_file(what: str, src, settings: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()`` for an open file, kept for the next call on the unchanged file (the report reads in parts).

    A file's cell-id index, stored totals and neighbor trees cost seconds at a million cells; reading a large
    held-out set in parts would otherwise rebuild them for every part.
    """
    key = (what, str(src.path), Path(src.path).stat().st_mtime_ns, settings)
    if key not in _PER_FILE:
        _PER_FILE[key] = compute()
        if len(_PER_FILE) > 8:
            _PER_FILE.popitem(last=False)
    return _PER_FILE[key]


def forget_input_files() -> None:
    """Drop what the reads keep per file (at a million cells: an id index and neighbor trees, ~0.15 GB).

    Call it when a run of reads is over, as the report does before drawing its embedding map.
    """
    _PER_FILE.clear()


def check_input_files(data: Sequence[str | Path], options: InputOptions, columns: Mapping[str, str]) -> None:
    """Fail on a missing file, a missing obs column (``columns``: column -> its role) or unknown gene ids."""
    for path in find_data_files(data):
        with open_source(path, layer=options.layer, gene_id_column=options.gene_id_column) as src:
            for column, role in columns.items():
                if src.obs_column(column) is None:
                    msg = f"{path}: obs column {column!r} ({role}) not found"
                    raise InputKeyError(msg)
            if not (gene_ids_of(src, options) != "").any():
                msg = (
                    f"{path}: none of its gene identifiers (like {list(src.raw_gene_ids[:3])}) is known to "
                    "the gene_mapping; check gene_id_column and the mapping"
                )
                raise InputError(msg)


def _gather(data: Sequence[str | Path], options: InputOptions, ids: np.ndarray, read: Callable):
    """Rows for the cells ``ids`` (unique cell ids), in that order: ``read(src, rows)`` per file.

    ``read`` gets an open file and sorted row indices (at most ``READ_PIECE``) and returns that many
    rows (sparse or dense).
    """
    found = np.zeros(len(ids), dtype=bool)
    parts, where = [], []
    for path in find_data_files(data):
        with open_source(path, layer=options.layer, gene_id_column=options.gene_id_column) as src:
            index = _per_file("cell ids", src, (), lambda: pd.Index(cell_ids(src.path, src.obs_names())))
            rows = index.get_indexer(ids)  # (ids,) row in this file or -1
            wanted = np.flatnonzero(rows >= 0)
            if len(wanted) == 0:
                continue
            wanted = wanted[np.argsort(rows[wanted])]
            parts += [read(src, rows[wanted[lo : lo + READ_PIECE]]) for lo in range(0, len(wanted), READ_PIECE)]
            where.append(wanted)
            found[wanted] = True
    if not found.all():
        missing = ids[~found][:3].tolist()
        msg = f"cells {missing} are in the token dataset but in none of the input files {list(map(str, data))}"
        raise InputError(msg)
    where = np.concatenate(where)  # (ids,) the position in ids of each row read, in reading order
    stacked = sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.concatenate(parts)
    del parts
    if np.array_equal(where, np.arange(len(ids))):  # ids in file order: no reordered copy
        return stacked
    order = np.empty(len(ids), dtype=np.int64)
    order[where] = np.arange(len(ids))
    return stacked[order]


def _expression(src, options: InputOptions, vocab: Mapping[str, int], rows: np.ndarray) -> sp.csr_matrix:
    """log1p(CP10k) (rows, vocabulary) of one file's sorted unique ``rows``, read as the tokenizer reads them."""
    counts = src.take_rows(rows)  # (rows, file genes)
    gene_ids = gene_ids_of(src, options)
    known = {g: vocab[g] for g in gene_ids if g in vocab}
    columns = ColumnMap.build(gene_ids, known, len(vocab), duplicates=options.duplicate_genes)
    stored = _per_file("totals", src, (options.total_counts_column,), lambda: stored_totals(src, options))
    totals = chunk_totals(stored, counts, rows)
    scaled = scale_rows(columns.apply(counts)[0], TARGET_SUM / np.maximum(totals, 1))
    scaled.data = np.log1p(scaled.data)
    return scaled


def read_expression(
    data: Sequence[str | Path], options: InputOptions, vocab: Mapping[str, int], ids: np.ndarray
) -> sp.csr_matrix:
    """log1p(CP10k) expression (cells, vocabulary) of the cells ``ids`` (unique cell ids), in that order.

    Read as the tokenizer reads them: the same matrix (``options.layer``), gene identifiers,
    mapping, duplicate rule and cell totals; the columns are the vocabulary's genes. Only the
    rows asked for are read, and the result stays sparse.
    """
    return _gather(data, options, ids, lambda src, rows: _expression(src, options, vocab, rows))


def read_neighbor_expression(
    data: Sequence[str | Path], config: TokenizerConfig, vocab: Mapping[str, int], ids: np.ndarray
) -> sp.csr_matrix:
    """Mean log1p(CP10k) expression (cells, vocabulary) of each cell's spatial neighbors, in the order of ``ids``.

    The neighbors are the tokenizer's (``config``: ``n_neighbors``, ``radius``, ``sample_column``,
    ``connectivities_key``); a cell without neighbors gets a zero row.
    """

    def read(src, rows: np.ndarray) -> sp.csr_matrix:
        neighbors = _per_file(
            "neighbors",
            src,
            (config.n_neighbors, config.radius, config.sample_column, config.spatial_key, config.connectivities_key),
            lambda: file_neighbors(src, config),
        )
        graph = neighbors(rows)  # (rows, cells)
        members = np.unique(graph.indices)
        local = sp.csr_matrix(
            (graph.data, np.searchsorted(members, graph.indices), graph.indptr), shape=(len(rows), len(members))
        )
        degree = np.asarray(local.sum(1)).ravel()
        weights = scale_rows(local, np.divide(1.0, degree, out=np.zeros(len(rows)), where=degree > 0))
        return (weights @ _expression(src, config, vocab, members)).tocsr()

    return _gather(data, config, ids, read)


def read_coordinates(data: Sequence[str | Path], options: InputOptions, ids: np.ndarray, key: str) -> np.ndarray:
    """``obsm[key]`` (cells, d) of the cells ``ids``, in that order; an error names a file without it."""

    def read(src, rows: np.ndarray) -> np.ndarray:
        coords = src.obsm(key)
        if coords is None:
            msg = f"{src.path}: no obsm[{key!r}]"
            raise InputKeyError(msg)
        return np.asarray(coords, dtype=np.float64)[rows]

    return _gather(data, options, ids, read)
