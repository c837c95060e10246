"""Cell embeddings (mean over a cell's genes) and gene embeddings (mean over cells)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from .._cells import cell_ids
from .._config import config_or_options
from .._constants import CELL_ID, CLS_TOKEN, INPUT_IDS, PAD_TOKEN
from .._datasets import example_lengths
from .._distributed import all_reduce_sum, barrier, ranks
from .._errors import InputError
from .._files import atomic_path, refuse_existing
from .._inference import hidden_states, open_for_inference
from ..settings import EmbedConfig
from ..vocab import special_token_ids


def embed(
    model_dir: str | Path,
    dataset: str | Path | Dataset,
    config: EmbedConfig | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> dict[str, np.ndarray]:
    """Embed every cell of a token dataset with the encoder of a saved model.

    The model runs on ``device`` (CUDA when present), in bf16 where the device is fast at it
    (``bf16``; stformer's kernels on CPU); batches hold cells of similar length, cut to the longest.
    A cell's embedding is the mean of ``hidden_layer``'s hidden states over its genes (padding and
    special tokens such as V2's ``<cls>``/``<eos>`` excluded), so it does not depend on the batch
    it was computed in; with ``pooling="cls"`` the state of its ``<cls>`` token (V2 models). Cells are batched by
    similar length and returned in dataset order. With ``genes=True`` also each gene's hidden
    state averaged over every cell that expresses it.

    Returns ``{"cells": (n_cells, hidden), "cell_ids": (n_cells,)}`` and, with genes,
    ``{"gene_tokens": (n_genes,), "genes": (n_genes, hidden)}`` (float32). With ``out`` (a
    folder) the arrays are written there as ``.npy`` files as they are computed (the cells' one
    row by row, so memory does not grow with the cells; the folder appears when complete) and
    returned memory-mapped. Under ``torchrun`` / ``accelerate launch`` (``out`` needed) the ranks
    share the batches and write one result in dataset order.

    Options are an :class:`EmbedConfig` or its fields by keyword (``hidden_layer``, ``batch_size``, ``genes``).

    >>> out = embed("runs/pbmc/model", "pbmc_tokens", out="embeddings")  # doctest: +SKIP
    >>> out["cells"].shape  # doctest: +SKIP
    (700, 256)
    """
    config = config_or_options(EmbedConfig, config, options)
    layer, batch_size, genes = config.hidden_layer, config.batch_size, config.genes
    rank, world, _ = ranks()
    if out is not None:
        refuse_existing(out, overwrite)
    if out is None and world > 1:
        msg = "under torchrun / accelerate launch, give embed an output folder (out=, --out) that the ranks share"
        raise InputError(msg)
    data, folder, model, device, bf16 = open_for_inference(
        model_dir, dataset, config.token_dictionary, config.device, config.bf16
    )
    model_config = folder.config
    n_layers, hidden_size, vocab_size = (
        model_config.num_hidden_layers,
        model_config.hidden_size,
        model_config.vocab_size,
    )
    if not -n_layers - 1 <= layer <= n_layers:
        msg = f"hidden_layer must lie in [{-n_layers - 1}, {n_layers}] for a {n_layers}-layer model, got {layer}"
        raise InputError(msg)
    if config.pooling == "cls" and CLS_TOKEN not in folder.vocab:
        msg = f"pooling='cls' needs a model whose cells start with {CLS_TOKEN} (Geneformer V2); its dictionary has none"
        raise InputError(msg)
    special = torch.tensor(special_token_ids(folder.vocab))
    order = np.argsort(-example_lengths(data), kind="stable")  # similar lengths together: little padding
    tokens = data.select_columns([INPUT_IDS])  # read by row numbers (a select per batch costs O(dataset))
    work = None if out is None else Path(out).with_name(f".{Path(out).name}.partial")
    if work is None:
        cells = np.zeros((len(data), hidden_size), dtype=np.float32)
    else:
        if rank == 0:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            open_memmap(work / "cells.npy", mode="w+", dtype=np.float32, shape=(len(data), hidden_size)).flush()
        barrier(device)
        cells = np.load(work / "cells.npy", mmap_mode="r+")  # (n_cells, hidden) on disk; each rank its rows
    gene_sum = torch.zeros(vocab_size, hidden_size, dtype=torch.float64) if genes else None
    gene_count = torch.zeros(vocab_size, dtype=torch.float64) if genes else None
    batches = range(rank * batch_size, len(data), world * batch_size)  # this rank's share
    for start in tqdm(batches, desc="embed", unit="batch", disable=not progress or rank != 0):
        rows = order[start : start + batch_size]
        hidden, ids, mask = hidden_states(model, tokens[rows][INPUT_IDS], layer, folder.vocab[PAD_TOKEN], bf16)
        real = mask.bool() & ~torch.isin(ids, special)  # (batch, seq): genes, not <pad>/<cls>/<eos>
        weights = real.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        pooled = hidden[:, 0] if config.pooling == "cls" else (hidden * weights).sum(1) / weights.sum(1)
        cells[rows] = pooled.numpy()  # (batch, hidden)
        if genes:
            gene_sum.index_add_(0, ids[real], hidden[real].double())
            gene_count.index_add_(0, ids[real], torch.ones(int(real.sum()), dtype=torch.float64))
    result = {"cells": cells, "cell_ids": np.asarray(data[CELL_ID] if CELL_ID in data.column_names else [], dtype=str)}
    if genes:
        gene_sum, gene_count = all_reduce_sum(gene_sum, device), all_reduce_sum(gene_count, device)  # over ranks
        seen = torch.nonzero(gene_count).squeeze(1)
        result["gene_tokens"] = seen.numpy()
        result["genes"] = (gene_sum[seen] / gene_count[seen].unsqueeze(1)).float().numpy()
    if work is None:
        return result
    cells.flush()
    barrier(device)
    if rank == 0:
        for name, values in result.items():
            if name != "cells":
                np.save(work / f"{name}.npy", values)
        with atomic_path(out, overwrite=True) as target:
            os.replace(work, target)
    barrier(device)
    return read_embeddings(out)


def read_embeddings(folder: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an embeddings folder (``cells.npy``, ``cell_ids.npy``, ...), memory-mapped."""
    files = sorted(Path(folder).glob("*.npy"))
    if not any(f.name == "cells.npy" for f in files):
        msg = f"{folder}: not an embeddings folder (no cells.npy); write one with stformer embed --out"
        raise InputError(msg)
    return {f.stem: np.load(f, mmap_mode="r") for f in files}


def write_embeddings(
    embeddings: dict[str, np.ndarray],
    out: str | Path | None,
    *,
    h5ad: str | Path | None = None,
    h5ad_out: str | Path | None = None,
    key: str = "X_stformer",
    overwrite: bool = False,
) -> None:
    """Save embeddings as a folder of ``.npy`` files (see :func:`embed`); optionally copy ``h5ad`` with them.

    ``out`` None writes no folder (for results that :func:`embed` already wrote). The copy of
    ``h5ad`` (default ``*_stformer.h5ad`` beside it) gets the cells' rows in ``obsm[key]``; the
    file is copied as it is and only that array added, so its matrix is never loaded. Cells are
    matched by their unique id (``"<file stem>:<obs name>"``, see :func:`stformer._cells.cell_ids`),
    so ``h5ad`` must be one of the tokenized files (under its own name); cells the tokenizer
    dropped (nothing expressed) get NaN rows.
    """
    if out is not None:
        with atomic_path(out, overwrite=overwrite) as tmp:
            tmp.mkdir()
            for name, values in embeddings.items():
                np.save(tmp / f"{name}.npy", values)
    if h5ad is None:
        return
    import anndata as ad
    import h5py
    from anndata.io import write_elem

    names = ad.read_h5ad(h5ad, backed="r").obs_names  # obs only; the matrix stays on disk
    rows = pd.Index(np.asarray(embeddings["cell_ids"]).astype(str)).get_indexer(cell_ids(h5ad, names))  # -1: absent
    if (rows < 0).all():
        files = sorted({c.rsplit(":", 1)[0] for c in np.asarray(embeddings["cell_ids"]).astype(str)})
        msg = (
            f"{h5ad}: none of its cells are in the embeddings, which hold cells of the files {files[:5]}; "
            "give one of the tokenized files, under its own name"
        )
        raise InputError(msg)
    matrix = np.full((len(names), embeddings["cells"].shape[1]), np.nan, dtype=np.float32)  # (file cells, hidden)
    matrix[rows >= 0] = embeddings["cells"][rows[rows >= 0]]
    target = h5ad_out or Path(h5ad).with_name(Path(h5ad).stem + "_stformer.h5ad")
    with atomic_path(target, overwrite=overwrite) as tmp:
        shutil.copyfile(h5ad, tmp)
        with h5py.File(tmp, "a") as f:
            obsm = f.require_group("obsm")
            if key in obsm:
                del obsm[key]
            write_elem(obsm, key, matrix)
