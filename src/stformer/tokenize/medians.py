"""Per-gene medians of non-zero normalized expression, streamed over one or many files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._config import config_or_options
from .._constants import TARGET_SUM
from .._errors import InputError
from .._files import write_mapping
from ..settings import MediansConfig
from ._common import check_counts, chunk_totals, gene_ids_of, stored_totals
from ._genes import ColumnMap
from ._sources import find_data_files, open_source
from .ranking import scale_rows

__all__ = ["compute_gene_medians", "write_gene_medians"]


class _Exact:
    """Keeps every non-zero value: exact medians, memory proportional to the non-zeros."""

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, gene: str, values: np.ndarray) -> None:
        self.values.setdefault(gene, []).append(values.astype(np.float32))

    def medians(self) -> dict[str, float]:
        return {str(g): float(np.median(np.concatenate(v))) for g, v in self.values.items()}


class _TDigest:
    """One t-digest per gene (crick): memory bounded per gene, relative error ~1e-3."""

    def __init__(self) -> None:
        from crick import TDigest

        self._new = TDigest
        self.digests: dict = {}

    def add(self, gene: str, values: np.ndarray) -> None:
        digest = self.digests.get(gene)
        if digest is None:
            digest = self.digests[gene] = self._new()
        digest.update(values)

    def medians(self) -> dict[str, float]:
        return {str(g): float(d.quantile(0.5)) for g, d in self.digests.items()}


def compute_gene_medians(
    data: str | Path | Sequence[str | Path],
    config: MediansConfig | None = None,
    *,
    progress: bool = True,
    **options,
) -> dict[str, float]:
    """Median of each gene's non-zero values after scaling every cell to 10,000 counts.

    Files (h5ad or loom, or folders of them) are streamed in chunks of ``chunk_size`` cells and
    pooled: the result is the median over all their cells. ``method="exact"`` keeps every
    non-zero value (memory grows with the data); ``"tdigest"`` uses bounded memory. Options are a
    :class:`MediansConfig` or its fields by keyword (``method``, ``layer``, ``gene_id_column``, ...).

    Returns ``{gene_id: median}`` sorted by gene id.

    >>> medians = compute_gene_medians(["a.h5ad", "b.loom"], method="exact")  # doctest: +SKIP
    """
    options = config_or_options(MediansConfig, config, options)
    accumulator = {"exact": _Exact, "tdigest": _TDigest}[options.method]()
    files = find_data_files(data)
    for path in files:
        with open_source(path, layer=options.layer, gene_id_column=options.gene_id_column) as src:
            gene_ids = gene_ids_of(src, options)
            genes = np.unique(gene_ids[gene_ids != ""])
            if len(genes) == 0:
                msg = f"{path}: no gene identifiers left after the gene mapping"
                raise InputError(msg)
            columns = ColumnMap.build(
                gene_ids,
                {g: i for i, g in enumerate(genes)},
                len(genes),
                duplicates=options.duplicate_genes,
                source=str(path),
            )
            stored = stored_totals(src, options)
            bar = tqdm(total=src.n_obs, desc=f"medians {path.name}", unit="cell", disable=not progress)
            for start in range(0, src.n_obs, options.chunk_size):
                stop = min(start + options.chunk_size, src.n_obs)
                counts = src.read_rows(start, stop)
                totals = chunk_totals(stored, counts, slice(start, stop))
                check_counts(src, counts, totals, options, first_row=start)
                keep = totals > 0
                scaled = scale_rows(columns.apply(counts[keep])[0], TARGET_SUM / totals[keep])
                scaled = scaled.tocsc()  # (cells, genes): one column per gene
                for j in np.flatnonzero(np.diff(scaled.indptr)):
                    accumulator.add(genes[j], scaled.data[scaled.indptr[j] : scaled.indptr[j + 1]])
                bar.update(stop - start)
            bar.close()
    medians = accumulator.medians()
    if not medians:
        msg = f"no non-zero counts found in {[str(f) for f in files]}"
        raise InputError(msg)
    return dict(sorted(medians.items()))


def write_gene_medians(medians: dict[str, float], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write medians as JSON, or as a pickle when ``path`` ends in ``.pkl``."""
    return write_mapping(medians, path, overwrite=overwrite)
