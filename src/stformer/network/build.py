"""``stformer.network``: gene networks from a model's attention, per state and between states, beside co-expression."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from .._config import config_or_options
from .._constants import (
    CELL_ID,
    COEXPRESSION_TABLE,
    EDGES_TABLE,
    INPUT_IDS,
    NETWORK_FIGURE,
    PAD_TOKEN,
    SCREEN_SETTINGS,
    TOKENIZE_SUMMARY_FILE,
)
from .._datasets import column_values, matching_rows
from .._distributed import all_reduce_sum, ranks
from .._errors import InputError
from .._files import atomic_path, refuse_existing
from .._inference import open_for_inference
from ..settings import InputOptions, NetworkConfig
from ..vocab import gene_symbols, gene_token_ids, special_token_ids, token_names
from .attention import GeneSums, attention_layers, cell_attention
from .plots import plot_network
from .statistics import coexpression, differential_test, fdr, overlap


def network(
    model_dir: str | Path,
    tokens: str | Path | Dataset,
    out: str | Path,
    config: NetworkConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> pd.DataFrame:
    """Build a gene network from the attention of a model over the cells of ``tokens``; write and return its edges.

    Edge i -> j: in each cell holding both genes, the attention from i's position to j's
    (averaged over ``layers`` and ``heads``) times the cell's number of genes, so that uniform
    attention is 1 whatever the cell's length; the edge's ``weight`` is the mean over those
    cells (``n_cells``). Special tokens and padding never enter; a gene present twice
    (neighborhood cells) counts at its first position. Genes: those in ``min_cells`` cells or
    more, at most ``max_genes`` (the most frequent), or the listed ``genes``. Memory grows with
    the genes squared, not with the cells; under ``torchrun`` the ranks share the cells.

    With ``states`` (two values of ``state_column``): each state's weight and the difference,
    tested by permuting the cells' states for the ``tested_edges`` strongest edges over both
    states (:mod:`stformer.network.statistics`), with Benjamini-Hochberg FDR.

    Beside it, always: the Spearman co-expression of the same genes over the same cells
    (log1p CP10k, read from the files the tokens were made from, or ``input_files``), and the overlap
    of the two networks' ``overlap_k`` strongest gene pairs.

    Writes ``out/edges.csv`` and ``.parquet`` (the ``top_edges`` strongest), ``out/coexpression_edges.csv``
    and ``.parquet``, ``out/network.png`` and ``out/settings.json`` (settings, cells, genes, overlap).
    Returns the edges, with ``attrs["overlap"]``.

    >>> edges = network("runs/pbmc/model", "tokens", "net", max_cells=300)  # doctest: +SKIP
    >>> edges[["source_symbol", "target_symbol", "weight", "n_cells"]].head()  # doctest: +SKIP
    """
    config = config_or_options(NetworkConfig, config, options)
    out = refuse_existing(out, overwrite)
    data, folder, model, device, bf16 = open_for_inference(
        model_dir, tokens, config.token_dictionary, config.device, config.bf16
    )
    layers, heads = _layers_and_heads(model, config, folder.path)
    vocab = folder.vocab
    cells, groups = _chosen_cells(data, config)
    special = np.asarray(special_token_ids(vocab))
    sequences = [np.asarray(s, dtype=np.int64) for s in data.select(cells)[INPUT_IDS]]
    genes = _network_genes(sequences, special, vocab, config)
    gene_index = torch.full((len(vocab),), -1, dtype=torch.int64)
    gene_index[torch.from_numpy(genes)] = torch.arange(len(genes))
    reading = {"model": model, "pad": vocab[PAD_TOKEN], "special": special, "layers": layers, "heads": heads}
    reading |= {"bf16": bf16, "device": device}
    sums = GeneSums(gene_index, len(genes), max(1, len(config.states or [])))
    for batch, attention, ids in _attention_batches(sequences, config, reading, progress, "network"):
        sums.add(attention, ids, _gene_counts(ids, reading), torch.from_numpy(groups[batch]))
    sums.reduced(lambda t: all_reduce_sum(t, device))
    shape = (len(genes), len(genes))
    counts = sums.counts.sum(0).reshape(shape).numpy()  # (genes, genes) cells holding both
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(counts >= config.min_cells, sums.sums.sum(0).reshape(shape).numpy() / counts, np.nan)
    edges, flat = _edge_table(weight, counts, genes, vocab, config)
    if config.states:
        edges = _differential(edges, flat, sums, sequences, groups, gene_index, config, reading, progress)
    rho, both = _coexpression(data, cells, genes, vocab, config, tokens)
    baseline = _coexpression_table(rho, both, genes, vocab, config)
    shared = overlap(weight, rho, config.overlap_k)
    rank = ranks()[0]
    if rank == 0:
        with atomic_path(out, overwrite=overwrite) as tmp:
            tmp.mkdir()
            for name, table in ((EDGES_TABLE, edges), (COEXPRESSION_TABLE, baseline)):
                table.to_csv(tmp / f"{name}.csv", index=False)
                table.to_parquet(tmp / f"{name}.parquet", index=False)
            plot_network(edges, baseline, config, tmp / NETWORK_FIGURE)
            settings = {
                "settings": asdict(config),
                "cells": int(len(cells)),
                "cells_per_state": _cells_per_state(groups, config),
                "genes": int(len(genes)),
                "edges_with_min_cells": int(np.isfinite(weight).sum()),
                "layers": layers,
                "heads": heads,
                "overlap": shared,
            }
            (tmp / SCREEN_SETTINGS).write_text(json.dumps(settings, indent=1, default=str))
    edges.attrs["overlap"] = shared
    return edges


def _layers_and_heads(model, config: NetworkConfig, path) -> tuple[list[int], list[int]]:
    """The chosen layers and heads as non-negative indices, checked against the model."""
    modules = attention_layers(model)
    if not modules:
        msg = f"{path}: the model has no self-attention layers, so no attention weights to build a network from"
        raise InputError(msg)
    n_heads = modules[0].num_attention_heads
    chosen = []
    for name, given, n in (("layers", config.layers, len(modules)), ("heads", config.heads, n_heads)):
        values = list(range(n)) if given is None else given
        if any(not -n <= v < n for v in values) or not values:
            model = f"{len(modules)} layers of {n_heads} heads"
            msg = f"{name} must lie in [{-n}, {n - 1}] for this model ({model}), got {given}"
            raise InputError(msg)
        chosen.append(sorted({v % n for v in values}))
    return chosen[0], chosen[1]


def _chosen_cells(data: Dataset, config: NetworkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the cells used (the filter, the states, at most max_cells of each) and each one's state index."""
    rows = matching_rows(data, config.filter or {})
    if len(rows) == 0:
        msg = f"no cell passes filter={config.filter}"
        raise InputError(msg)
    rng = np.random.default_rng(config.seed)
    if not config.states:
        groups = [rows]
    else:
        values = column_values(data, config.state_column)[rows].astype(str)
        groups = [rows[values == state] for state in config.states]
        missing = [s for s, g in zip(config.states, groups, strict=True) if len(g) == 0]
        if missing:
            known = sorted(set(values))
            msg = f"no cell has {config.state_column}={missing[0]!r} (among those filtered; states there: {known[:10]})"
            raise InputError(msg)
    cap = config.max_cells
    groups = [np.sort(rng.choice(g, cap, replace=False)) if cap is not None and len(g) > cap else g for g in groups]
    cells = np.concatenate(groups)
    return cells, np.repeat(np.arange(len(groups)), [len(g) for g in groups])


def _network_genes(sequences: list[np.ndarray], special: np.ndarray, vocab: dict, config: NetworkConfig) -> np.ndarray:
    """Token ids of the network's genes: in min_cells cells or more, the listed ones or the max_genes most frequent."""
    present = np.concatenate([np.unique(s[~np.isin(s, special)]) for s in sequences])
    frequency = np.bincount(present, minlength=len(vocab))  # (vocabulary,) cells holding each token
    candidates = np.arange(len(vocab))
    if config.genes is not None:
        candidates = np.unique(gene_token_ids(config.genes, vocab, config.gene_mapping))
    candidates = candidates[frequency[candidates] >= config.min_cells]
    order = np.argsort(-frequency[candidates], kind="stable")[: config.max_genes]
    genes = np.sort(candidates[order])
    pairs = max((np.isin(s, genes).sum() for s in sequences), default=0)
    if len(genes) < 2 or pairs < 2:
        what = "the listed genes" if config.genes is not None else "the genes"
        msg = (
            f"no cell holds two of {what} that occur in min_cells={config.min_cells} of the {len(sequences)} cells "
            f"({len(genes)} such genes): list genes that occur together, or lower min_cells"
        )
        raise InputError(msg)
    return genes


def _gene_counts(ids: torch.Tensor, reading: dict) -> torch.Tensor:
    """(batch,) genes in each cell: positions that are neither padding nor special tokens."""
    return (~torch.isin(ids, torch.from_numpy(np.append(reading["special"], reading["pad"])))).sum(1)


def _attention_batches(sequences, config: NetworkConfig, reading: dict, progress: bool, label: str):
    """(row indices into ``sequences``, attention, ids) per batch of this rank's share, longest cells first."""
    rows = np.arange(len(sequences))
    lengths = np.asarray([len(sequences[r]) for r in rows])
    order = rows[np.argsort(-lengths, kind="stable")]  # similar lengths together: little padding
    rank, world, _ = ranks()
    starts = range(rank * config.batch_size, len(order), world * config.batch_size)
    for start in tqdm(starts, desc=label, unit="batch", disable=not progress or rank != 0):
        batch = order[start : start + config.batch_size]
        attention, ids = cell_attention(
            reading["model"],
            [sequences[r] for r in batch],
            reading["pad"],
            reading["layers"],
            reading["heads"],
            reading["bf16"],
        )
        yield batch, attention, ids


def _named(frame: pd.DataFrame, source: np.ndarray, target: np.ndarray, genes, vocab, config) -> pd.DataFrame:
    """``frame`` with source and target gene ids and symbols in front (rows of the genes array)."""
    names = token_names(vocab)
    symbols = gene_symbols(config.gene_mapping)
    ids = [np.asarray([names[int(genes[r])] for r in side], dtype=object) for side in (source, target)]
    front = pd.DataFrame(
        {
            "source": ids[0],
            "target": ids[1],
            "source_symbol": [symbols.get(g, g) for g in ids[0]],
            "target_symbol": [symbols.get(g, g) for g in ids[1]],
        }
    )
    return pd.concat([front, frame.reset_index(drop=True)], axis=1)


def _edge_table(weight: np.ndarray, counts: np.ndarray, genes, vocab, config: NetworkConfig):
    """The ``top_edges`` strongest directed edges (weight NaN: fewer than min_cells cells hold both genes).

    Returns the table and each row's flat pair index (source * genes + target).
    """
    finite = np.flatnonzero(np.isfinite(weight).ravel())
    top = finite[np.argsort(-weight.ravel()[finite], kind="stable")[: config.top_edges]]
    source, target = np.unravel_index(top, weight.shape)
    frame = pd.DataFrame({"weight": weight.ravel()[top], "n_cells": counts.ravel()[top].astype(np.int64)})
    return _named(frame, source, target, genes, vocab, config), top


def _differential(edges, flat, sums: GeneSums, sequences, groups, gene_index, config: NetworkConfig, reading, progress):
    """``edges`` with each state's weight and cells, the difference and its permutation p-value and FDR."""
    for s, state in enumerate(config.states):
        with np.errstate(invalid="ignore", divide="ignore"):
            edges[f"weight_{state}"] = (sums.sums[s, flat] / sums.counts[s, flat]).numpy()
        edges[f"n_cells_{state}"] = sums.counts[s, flat].numpy().astype(np.int64)
    tested = flat[: config.tested_edges]  # the strongest over both states: chosen blind to the states
    values, present = _cell_values(sequences, gene_index, sums.n_genes, tested, config, reading, progress)
    difference, p = differential_test(values, present, groups == 0, config.permutations, config.seed)
    edges["difference"] = np.nan
    edges["p_value"] = np.nan
    edges.loc[: len(tested) - 1, "difference"] = difference
    edges.loc[: len(tested) - 1, "p_value"] = p
    edges["fdr"] = fdr(edges["p_value"].to_numpy())
    return edges


def _cell_values(sequences, gene_index, n_genes, tested, config, reading, progress) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's length-scaled attention on the tested edges: values (cells, edges), present (cells, edges)."""
    values = torch.zeros(len(sequences), len(tested), dtype=torch.float64)
    present = torch.zeros(len(sequences), len(tested), dtype=torch.float64)
    where = torch.full((n_genes * n_genes,), -1, dtype=torch.int64)  # flat pair -> column among the tested edges
    where[torch.from_numpy(tested)] = torch.arange(len(tested))
    sums = GeneSums(gene_index, n_genes)
    for batch, attention, ids in _attention_batches(sequences, config, reading, progress, "differential"):
        lengths = _gene_counts(ids, reading)  # (batch,)
        for row, cell in enumerate(batch):
            positions, _, pair = sums.pairs(ids[row])
            columns = where[pair]  # (k, k) column of each pair, -1 when not tested
            hit = columns >= 0
            scaled = attention[row][positions][:, positions] * lengths[row]
            values[cell, columns[hit]] = scaled[hit].double()
            present[cell, columns[hit]] = 1
    values, present = (all_reduce_sum(t, reading["device"]) for t in (values, present))  # each rank its cells
    return values.numpy(), present.numpy().astype(bool)


def _input_files(config: NetworkConfig, tokens) -> tuple[list[str], InputOptions]:
    """The h5ad/loom files of the co-expression baseline and how to read them (the tokenizer's options)."""
    summary_file = Path(tokens) / TOKENIZE_SUMMARY_FILE if isinstance(tokens, (str, Path)) else None
    summary = json.loads(summary_file.read_text()) if summary_file is not None and summary_file.exists() else None
    files = config.input_files or ([f["file"] for f in summary["files"]] if summary else None)
    if not files:
        msg = (
            "the co-expression baseline needs the h5ad/loom files the cells come from: give input_files= "
            "(--input-files), "
            f"since {summary_file or 'an in-memory dataset'} does not name them"
        )
        raise InputError(msg)
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        msg = f"{missing[0]}: input file of the co-expression baseline not found; give the files as input_files="
        raise InputError(msg)
    reading = {f.name: (summary or {}).get("config", {}).get(f.name, f.default) for f in fields(InputOptions)}
    return files, InputOptions(**reading)


def _coexpression(data: Dataset, cells, genes, vocab, config: NetworkConfig, tokens) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho and co-expressing cells (genes, genes) over the network's cells, read as the tokenizer does."""
    from ..tokenize import read_expression

    files, options = _input_files(config, tokens)
    ids = np.asarray(data.select(cells)[CELL_ID], dtype=str)
    expression = read_expression(files, options, vocab, ids)[:, genes]  # (cells, genes)
    return coexpression(expression)


def _coexpression_table(rho: np.ndarray, both: np.ndarray, genes, vocab, config: NetworkConfig) -> pd.DataFrame:
    """The ``top_edges`` strongest gene pairs (i < j) by absolute Spearman rho, in the edges' format."""
    source, target = np.triu_indices(len(genes), 1)
    order = np.argsort(-np.abs(rho[source, target]), kind="stable")[: config.top_edges]
    source, target = source[order], target[order]
    frame = pd.DataFrame({"weight": rho[source, target], "n_cells": both[source, target].astype(np.int64)})
    return _named(frame, source, target, genes, vocab, config)


def _cells_per_state(groups: np.ndarray, config: NetworkConfig) -> dict[str, int] | None:
    if not config.states:
        return None
    return {state: int((groups == s).sum()) for s, state in enumerate(config.states)}


__all__ = ["network"]
