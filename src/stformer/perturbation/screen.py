"""``stformer.perturb``: an in silico perturbation screen over the cells of a token dataset."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset
from tqdm.auto import tqdm

from .._config import config_or_options
from .._constants import (
    CELL_ID,
    CELLS_TABLE,
    CLS_TOKEN,
    GENE_SHIFTS,
    GENES_TABLE,
    INPUT_IDS,
    PAD_TOKEN,
    PERTURB_FIGURE,
    SCREEN_SETTINGS,
)
from .._datasets import example_lengths, matching_rows
from .._distributed import barrier, ranks
from .._errors import InputError
from .._files import atomic_path, file_identity, refuse_existing
from .._inference import open_for_inference
from .._warnings import StformerWarning
from ..settings import PerturbConfig
from ..vocab import cell_frame, gene_symbols, gene_token_ids, special_token_ids, token_names
from .engine import cell_embeddings, perturbation_shifts
from .plan import plan_perturbations
from .plots import plot_screen
from .statistics import GOAL_SHIFT, gene_statistics, state_separation

MAX_GENE_SHIFT_ROWS = 20_000_000
SEPARATION_WARNING = 0.75  # state separation below which the screen warns that its space cannot answer


def perturb(
    model_dir: str | Path,
    tokens: str | Path | Dataset,
    out: str | Path,
    config: PerturbConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> pd.DataFrame:
    """Perturb genes in the cells of ``tokens`` with the model in ``model_dir``; write and return the gene table.

    Each (cell, perturbation) gets the cosine similarity of the perturbed cell to its original
    and, with ``goal_state``, its shift toward the goal state's mean embedding (``goal_shift``;
    ``shift_to_<state>`` for each alternative state; see
    :func:`~stformer.perturbation.engine.perturbation_shifts`).

    Null and test: for every screened (cell, gene), ``null_draws`` other expressed genes of the
    same cell at the nearest ranks (drawn among the ``2 * null_draws`` nearest, the screened
    genes excluded) are perturbed the same way. Each gene's effect (the goal shift, else
    1 - similarity) is its mean over cells of the difference from the median of its draws, with
    a bootstrap 95% interval over cells, tested against the spread of random genes' effects, with
    Benjamini-Hochberg FDR over genes (:mod:`stformer.perturbation.statistics` states the null
    hypothesis and the test).

    With a goal state, ``settings.json`` records ``state_separation``: how well the model's
    embeddings tell the screened cells from the goal state's (cross-validated nearest-centroid
    balanced accuracy, chance 0.5); a space that cannot separate them cannot say what moves a
    cell toward the goal (a warning says so below 0.75; screen in a classifier fine-tuned on the
    states, as ``stformer run`` does by default).

    Writes ``out/genes.csv`` and ``out/genes.parquet`` (one row per gene or gene set, sorted by
    FDR, p-value, then effect), ``out/cells.parquet`` (one row per cell and perturbation, null ones
    marked), ``out/perturbation.png``, ``out/settings.json`` and with ``gene_shifts``
    ``out/gene_shifts.parquet`` (per cell) and ``out/gene_shifts.csv`` (mean over cells).

    Cells are screened in chunks of ``chunk_cells``, each written as it completes: a killed run
    started again with the same settings continues after its last complete chunk. Under
    ``torchrun`` / ``accelerate launch`` the ranks share the chunks and rank 0 merges them.

    >>> perturb("runs/pbmc/model", "tokens", "screen", state_column="cell_type",
    ...         start_state="CD14+ Monocyte", goal_state="Dendritic", max_cells=50)  # doctest: +SKIP
    """
    config = config_or_options(PerturbConfig, config, options)
    out = refuse_existing(out, overwrite)
    data, folder, model, device, bf16 = open_for_inference(
        model_dir, tokens, config.token_dictionary, config.device, config.bf16
    )
    vocab = folder.vocab
    rank, world, _ = ranks()
    special = np.asarray(special_token_ids(vocab))
    frame = cell_frame(vocab) if len(data) and data[0][INPUT_IDS][0] == vocab.get(CLS_TOKEN) else None
    reading = {"pad_id": vocab[PAD_TOKEN], "bf16": bf16, "frame": frame, "special": special}
    chosen = _chosen_cells(data, config)
    wanted, anchor = _genes(config, config.genes, vocab), _anchor(config, vocab)
    _check_gene_shift_size(data, chosen, wanted, config)
    goals, separation = _goals(model, data, chosen, config, reading)
    work = out.with_name(f".{out.name}.partial")
    if rank == 0:
        _prepare_work_folder(work, _fingerprint(model_dir, tokens, data, chosen, config))
    barrier(device)
    n_chunks = -(-len(chosen) // config.chunk_cells)
    mine = [k for k in range(rank, n_chunks, world) if not (work / _chunk_name(k)).exists()]
    for k in tqdm(mine, desc="perturb", unit="chunk", disable=not progress or rank != 0):
        rows = chosen[k * config.chunk_cells : (k + 1) * config.chunk_cells]
        cells, shifts = _screen_chunk(model, data.select(rows), rows, wanted, anchor, config, goals, vocab, reading, k)
        if shifts is not None:
            _write_parquet(shifts, work / _chunk_name(k, GENE_SHIFTS))
        _write_parquet(cells, work / _chunk_name(k))  # last: its presence marks the chunk complete
    barrier(device)
    if rank == 0:
        _merge(work, out, n_chunks, config, vocab, overwrite, separation)
        shutil.rmtree(work)
    barrier(device)
    genes = pd.read_parquet(out / f"{GENES_TABLE}.parquet")
    recorded = json.loads((out / SCREEN_SETTINGS).read_text())
    genes.attrs["skipped"], genes.attrs["state_separation"] = (
        recorded["skipped_perturbations"],
        recorded["state_separation"],
    )
    return genes


def _genes_of(part: Dataset, special: np.ndarray) -> list[np.ndarray]:
    """Each cell's genes in rank order (V2's <cls>/<eos> left out: the engine frames the sequences)."""
    return [ids[~np.isin(ids, special)] for ids in (np.asarray(row, dtype=np.int64) for row in part[INPUT_IDS])]


def _screen_chunk(model, part: Dataset, rows, wanted, anchor, config: PerturbConfig, goals, vocab, reading, chunk):
    """The per-cell table of one chunk of cells (and its gene shifts, when asked)."""
    cells = _genes_of(part, reading["special"])
    names = np.asarray(part[CELL_ID] if CELL_ID in part.column_names else rows).astype(str)
    rng = np.random.default_rng([config.seed, chunk])  # the same draws however the chunks are shared
    plan = plan_perturbations(cells, wanted, anchor, config, rng)
    shifts = perturbation_shifts(
        model,
        cells,
        plan["perturbation"],
        config.perturbation,
        fraction=config.fraction,
        layer=config.hidden_layer,
        batch_size=config.batch_size,
        pad_id=reading["pad_id"],
        goals=goals,
        bf16=reading["bf16"],
        gene_shifts=config.gene_shifts,
        frame=reading["frame"],
        similarity=config.similarity,
    )
    gene_of = token_names(vocab)
    label = ["+".join(gene_of[g] for g in p.genes) for p in plan["perturbation"]]
    per_gene = shifts.pop("gene_shifts", None)
    table = pd.DataFrame(
        {
            CELL_ID: names[[p.cell for p in plan["perturbation"]]],
            "gene": label,
            "rank": plan["rank"],
            "null": plan["null_for"] >= 0,
            "null_for": np.asarray([label[i] if i >= 0 else "" for i in plan["null_for"]], dtype=object),
            **shifts,
        }
    )
    if per_gene is None:
        return table, None
    screened = [i for i in np.flatnonzero(~table["null"]) if per_gene[i] is not None]
    lengths = [len(per_gene[i][0]) for i in screened]
    gene_shift_rows = pd.DataFrame(
        {
            CELL_ID: np.repeat(table[CELL_ID].to_numpy()[screened], lengths),
            "gene": np.repeat(table["gene"].to_numpy()[screened], lengths),
            "affected_gene": [gene_of[int(t)] for i in screened for t in per_gene[i][0]],
            "cosine_similarity": np.concatenate([per_gene[i][1] for i in screened]) if screened else [],
        }
    )
    return table, gene_shift_rows


def _merge(work: Path, out: Path, n_chunks: int, config: PerturbConfig, vocab, overwrite: bool, separation) -> None:
    """Join the chunks' tables, test each gene, and write every output at once."""
    table = pd.concat([pd.read_parquet(work / _chunk_name(k)) for k in range(n_chunks)], ignore_index=True)
    genes = gene_statistics(table, config.goal_state, seed=config.seed)
    symbols = gene_symbols(config.gene_mapping)
    genes.insert(1, "symbol", genes["gene"].map(lambda g: "+".join(symbols.get(x, x) for x in g.split("+"))))
    skipped = int((~table["applied"] & ~table["null"]).sum())
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        table.to_parquet(tmp / CELLS_TABLE, index=False)
        genes.to_csv(tmp / f"{GENES_TABLE}.csv", index=False)
        genes.to_parquet(tmp / f"{GENES_TABLE}.parquet", index=False)
        plot_screen(genes, table, config, tmp / PERTURB_FIGURE)
        if config.gene_shifts:
            shifts = pd.concat([pd.read_parquet(work / _chunk_name(k, GENE_SHIFTS)) for k in range(n_chunks)])
            shifts.to_parquet(tmp / f"{GENE_SHIFTS}.parquet", index=False)
            summary = shifts.groupby(["gene", "affected_gene"])["cosine_similarity"].agg(n_cells="size", mean="mean")
            summary = summary.rename(columns={"mean": "cosine_similarity_mean"}).reset_index()
            summary.sort_values("cosine_similarity_mean").to_csv(tmp / f"{GENE_SHIFTS}.csv", index=False)
        settings = {
            "settings": asdict(config),
            "skipped_perturbations": skipped,
            "cells": int(table[CELL_ID].nunique()),
            "state_separation": separation,
            "random_genes": genes.attrs["random_genes"],
        }
        (tmp / SCREEN_SETTINGS).write_text(json.dumps(settings, indent=1))


def _chunk_name(k: int, kind: str = "cells") -> str:
    return f"chunk-{k:06d}.{kind}.parquet"


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _fingerprint(model_dir, tokens, data: Dataset, chosen: np.ndarray, config: PerturbConfig) -> str:
    """What the chunks depend on: the settings, the model's files, the token files and the cells chosen."""
    parts = {
        "settings": asdict(config),
        "model": file_identity(model_dir),
        "tokens": file_identity(tokens) if isinstance(tokens, (str, Path)) else data._fingerprint,
        "cells": hashlib.sha256(np.asarray(chosen, dtype=np.int64).tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _prepare_work_folder(work: Path, fingerprint: str) -> None:
    """Keep the chunks of an interrupted run with the same fingerprint; start clean otherwise."""
    stamp = work / "fingerprint"
    if work.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def _chosen_cells(data: Dataset, config: PerturbConfig) -> np.ndarray:
    """Indices of the cells to perturb: the filter, the start state, then a seeded draw of max_cells."""
    conditions = dict(config.filter or {})
    if config.start_state is not None:
        conditions[config.state_column] = config.start_state
    chosen = matching_rows(data, conditions)
    if len(chosen) == 0:
        msg = f"no cell passes filter={config.filter} and start_state={config.start_state!r}"
        raise InputError(msg)
    if config.max_cells is not None and len(chosen) > config.max_cells:
        chosen = np.sort(np.random.default_rng(config.seed).choice(chosen, config.max_cells, replace=False))
    return chosen


def _goals(model, data: Dataset, chosen: np.ndarray, config: PerturbConfig, reading: dict) -> tuple[dict, float | None]:
    """Result column -> mean embedding (hidden,) of the goal state's cells and of each alternative state's.

    Also how well the embeddings separate the cells screened from the goal state's (see
    :func:`~stformer.perturbation.statistics.state_separation`), with a warning below 0.75.
    """
    if config.goal_state is None:
        return {}, None
    columns = {GOAL_SHIFT: config.goal_state} | {f"shift_to_{s}": s for s in config.alt_states or []}
    members = {column: matching_rows(data, {config.state_column: state}) for column, state in columns.items()}
    empty = [columns[column] for column, rows in members.items() if len(rows) == 0]
    if empty:
        msg = f"no cell has {config.state_column}={empty[0]!r} (goal or alternative state)"
        raise InputError(msg)
    rows = np.unique(np.concatenate([chosen, *members.values()]))  # every state's cells embedded in one pass
    means = cell_embeddings(
        model,
        _genes_of(data.select(rows), reading["special"]),
        layer=config.hidden_layer,
        batch_size=config.batch_size,
        pad_id=reading["pad_id"],
        bf16=reading["bf16"],
        frame=reading["frame"],
    )
    goal = members[GOAL_SHIFT]
    start = np.setdiff1d(chosen, goal)
    separation = state_separation(means[np.searchsorted(rows, start)], means[np.searchsorted(rows, goal)])
    if separation is not None and separation < SEPARATION_WARNING:
        warnings.warn(
            f"the model's embeddings barely tell the screened cells from {config.state_column}={config.goal_state!r} "
            f"(nearest-centroid balanced accuracy {separation:.2f}, chance 0.5): shifts toward the goal say little "
            "here; screen in a classifier fine-tuned on the states",
            StformerWarning,
            stacklevel=3,
        )
    return {column: means[np.searchsorted(rows, chosen)].mean(0) for column, chosen in members.items()}, separation


def _genes(config: PerturbConfig, genes, vocab: dict[str, int]) -> list[int] | None:
    """Token ids of the listed genes (ids or symbols), or None for "all"."""
    return None if genes == "all" else gene_token_ids(genes, vocab, config.gene_mapping)


def _anchor(config: PerturbConfig, vocab) -> int | None:
    return None if config.anchor_gene is None else _genes(config, [config.anchor_gene], vocab)[0]


def _check_gene_shift_size(data: Dataset, chosen: np.ndarray, wanted, config: PerturbConfig) -> None:
    """Refuse a gene-shift table too large to write: (cells x perturbations per cell x genes per cell) rows."""
    if not config.gene_shifts:
        return
    lengths = example_lengths(data)[chosen].astype(np.float64)
    per_cell = lengths if wanted is None else np.full(len(chosen), 1 if config.together else len(wanted))
    rows = float((per_cell * lengths).sum())
    if rows > MAX_GENE_SHIFT_ROWS:
        msg = (
            f"gene_shifts would write {rows:.3g} rows (cells x perturbations x genes per cell), more than "
            f"{MAX_GENE_SHIFT_ROWS:,}; list fewer genes or lower max_cells"
        )
        raise InputError(msg)
