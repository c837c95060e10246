"""Reading the input files as the tokenizer does, for the other stages (checks, the report's baseline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._cells import cell_ids
from .._constants import TARGET_SUM
from .._errors import InputError, InputKeyError
from ..settings import InputOptions
from ._common import chunk_totals, gene_ids_of, stored_totals
from ._genes import ColumnMap
from ._sources import find_data_files, open_source
from .ranking import scale_rows


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


def read_expression(
    data: Sequence[str | Path], options: InputOptions, vocab: Mapping[str, int], ids: np.ndarray
) -> sp.csr_matrix:
    """log1p(CP10k) expression (cells, vocabulary) of the cells ``ids`` (unique cell ids), in that order.

    Read as the tokenizer reads them: the same matrix (``options.layer``), gene identifiers,
    mapping, duplicate rule and cell totals; the columns are the vocabulary's genes. Only the
    rows asked for are read, and the result stays sparse.
    """
    found = np.full(len(ids), -1)
    parts, where = [], []
    for path in find_data_files(data):
        with open_source(path, layer=options.layer, gene_id_column=options.gene_id_column) as src:
            rows = pd.Index(cell_ids(path, src.obs_names())).get_indexer(ids)  # (ids,) row in this file or -1
            wanted = np.flatnonzero(rows >= 0)
            if len(wanted) == 0:
                continue
            wanted = wanted[np.argsort(rows[wanted])]
            counts = src.take_rows(rows[wanted])  # (wanted, file genes), rows ascending
            gene_ids = gene_ids_of(src, options)
            known = {g: vocab[g] for g in gene_ids if g in vocab}
            columns = ColumnMap.build(gene_ids, known, len(vocab), duplicates=options.duplicate_genes)
            totals = chunk_totals(stored_totals(src, options), counts, rows[wanted])
            scaled = scale_rows(columns.apply(counts)[0], TARGET_SUM / np.maximum(totals, 1))
            scaled.data = np.log1p(scaled.data)
            parts.append(scaled)
            where.append(wanted)
            found[wanted] = 1
    if (found < 0).any():
        missing = ids[found < 0][:3].tolist()
        msg = f"cells {missing} are in the token dataset but in none of the input files {list(map(str, data))}"
        raise InputError(msg)
    matrix = sp.vstack(parts).tocsr()
    order = np.empty(len(ids), dtype=np.int64)
    order[np.concatenate(where)] = np.arange(len(ids))
    return matrix[order]
