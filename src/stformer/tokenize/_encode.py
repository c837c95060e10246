"""Encoding: the cells of one file, chunk by chunk on worker threads, into rank-value tokens."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._cells import cell_ids
from .._constants import CELL_ID, OBS_NAME
from ..settings import TokenizerConfig
from ._common import check_counts, chunk_totals, stored_totals
from ._plan import FilePlan
from ._sources import CountSource, open_source
from .neighbors import neighbor_graph
from .ranking import concat_ragged, rank_value_encode, scale_rows


@dataclass
class EncodedChunk:
    """The tokens of one chunk of a file's cells (cells without an expressed vocabulary gene dropped)."""

    n_cells: int  # cells read, kept or not
    rows: np.ndarray  # (kept,) each kept cell's row in its file
    tokens: np.ndarray  # (tokens,) the kept cells' token ids, one cell after another
    lengths: np.ndarray  # (kept,) tokens of each kept cell
    neighbor_start: np.ndarray | None  # (kept,) where each neighborhood part begins; None in spot mode
    counts_total: float  # counts of the cells read
    counts_covered: float  # of them, the counts of vocabulary genes
    metadata: dict[str, np.ndarray] = field(default_factory=dict)  # dataset column -> (kept,) values


@dataclass
class _OpenFile:
    """A file opened for tokenizing: the reader plus per-cell arrays read once."""

    plan: FilePlan
    source: CountSource  # h5py serializes reads across worker threads
    totals: np.ndarray | None  # (cells,) stored totals, or None to use row sums
    graph: sp.csr_matrix | None  # (cells, cells) neighbor graph in neighborhood mode
    metadata: dict[str, np.ndarray]  # dataset column -> (cells,) values


def _encode_chunk(
    file: _OpenFile, start: int, stop: int, config: TokenizerConfig, frame: tuple[int, int] | None
) -> EncodedChunk:
    """Tokenize cells ``start:stop`` of one file; returns tokens, lengths and counters.

    With ``frame`` (``<cls>`` and ``<eos>`` ids) each cell starts and ends with them, within
    ``max_length``.
    """
    cap = config.length_cap - (2 if frame else 0)  # genes per cell
    counts = file.source.read_rows(start, stop)  # (cells, file genes)
    totals = chunk_totals(file.totals, counts, slice(start, stop))
    check_counts(file.source, counts, totals, config, first_row=start)
    keep = totals > 0
    weighted, covered = file.plan.columns.apply(counts)  # (cells, vocab); empty cells give empty rows
    if config.mode == "spot":
        tokens, lengths = rank_value_encode(scale_rows(weighted[keep], 1.0 / totals[keep]), cap)
        neighbor_start = None
    else:
        nb_values = _neighborhood_values(file, start, stop, weighted, totals)[keep]  # before own is scaled
        own = scale_rows(weighted[keep], 1.0 / totals[keep])  # (cells, vocab)
        nb_count = np.diff(nb_values.indptr)
        own_part = rank_value_encode(own, cap - np.minimum(nb_count, cap // 2))
        nb_part = rank_value_encode(nb_values, cap - own_part[1])
        tokens, lengths = concat_ragged(own_part, nb_part)
        neighbor_start = own_part[1]
    rows = np.flatnonzero(keep)
    if neighbor_start is None:
        nonempty = lengths > 0
    else:
        nonempty = neighbor_start > 0
        neighbor_start = neighbor_start[nonempty]
    tokens, lengths = _select_rows(tokens, lengths, nonempty)
    if frame:
        ones = np.ones(len(lengths), dtype=lengths.dtype)
        first, last = (np.full(len(lengths), token, dtype=tokens.dtype) for token in frame)
        tokens, lengths = concat_ragged(concat_ragged((first, ones), (tokens, lengths)), (last, ones))
        neighbor_start = None if neighbor_start is None else neighbor_start + 1
    return EncodedChunk(
        n_cells=stop - start,
        rows=start + rows[nonempty],
        tokens=tokens,
        lengths=lengths,
        neighbor_start=neighbor_start,
        counts_total=float(counts.data[np.repeat(keep, np.diff(counts.indptr))].sum()),
        counts_covered=covered,
    )


def _neighborhood_values(
    file: _OpenFile, start: int, stop: int, weighted: sp.csr_matrix, totals: np.ndarray
) -> sp.csr_matrix:
    """Normalized summed counts of the neighbors of cells ``start:stop`` (cells, vocab genes).

    ``weighted`` and ``totals`` are the chunk's own rows, already read; only the neighbors outside
    the chunk are read from the file. The sums are one sparse product.
    """
    adjacency = file.graph[start:stop]  # (cells, all cells)
    outside = np.unique(adjacency.indices[(adjacency.indices < start) | (adjacency.indices >= stop)])
    extra = file.source.take_rows(outside)  # (outside, file genes)
    members = sp.vstack([weighted, file.plan.columns.apply(extra)[0]], format="csr")  # (own + outside, vocab)
    member_totals = np.concatenate([totals, chunk_totals(file.totals, extra, outside)])
    inside = (adjacency.indices >= start) & (adjacency.indices < stop)
    column = np.where(inside, adjacency.indices - start, stop - start + np.searchsorted(outside, adjacency.indices))
    local = sp.csr_matrix((adjacency.data, column, adjacency.indptr), shape=(stop - start, len(member_totals)))
    summed = (local @ members).tocsr()  # (cells, vocab)
    summed_totals = local @ member_totals  # (cells,)
    inverse = np.divide(1.0, summed_totals, out=np.zeros(stop - start), where=summed_totals > 0)
    return scale_rows(summed, inverse)


def _select_rows(tokens: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if keep.all():
        return tokens, lengths
    return tokens[np.repeat(keep, lengths)], lengths[keep]


def encode_file(plan: FilePlan, config: TokenizerConfig, frame: tuple[int, int] | None) -> Iterator[EncodedChunk]:
    """Open one file and yield its encoded chunks in order (worker threads when nproc > 1)."""
    with open_source(plan.path, layer=config.layer, gene_id_column=config.gene_id_column) as src:
        names = src.obs_names()
        metadata = {CELL_ID: cell_ids(plan.path, names), OBS_NAME: names}
        metadata.update({new: src.obs_column(old) for old, new in config.column_map().items()})
        file = _OpenFile(
            plan=plan,
            source=src,
            totals=stored_totals(src, config),
            graph=neighbor_graph(src, config) if config.mode == "neighborhood" else None,
            metadata=metadata,
        )
        size = config.chunk_size
        chunks = [(s, min(s + size, plan.n_cells)) for s in range(0, plan.n_cells, size)]
        for result in _ordered_map(lambda c: _encode_chunk(file, *c, config, frame), chunks, config.workers):
            result.metadata = {name: values[result.rows] for name, values in metadata.items()}
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
