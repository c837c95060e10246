"""``stformer.perturb``: an in silico perturbation screen over the cells of a token dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, load_from_disk
from scipy.stats import false_discovery_control, mannwhitneyu

from .._config import build_config
from .._constants import CELL_ID, INPUT_IDS, PAD_TOKEN, VOCAB_FILE
from .._errors import InputError
from .._figures import new_figure, save_figure
from .._files import atomic_path, load_mapping_file
from .._hardware import bf16_is_fast
from ..classify.data import matching_rows
from ..settings import PerturbConfig
from ..vocab import load_token_dictionary
from .engine import Perturbation, perturbation_shifts

GENES_TABLE, CELLS_TABLE, FIGURE = "genes", "cells.parquet", "perturbation.png"


def perturb(
    model_dir: str | Path,
    tokens: str | Path | Dataset,
    out: str | Path,
    config: PerturbConfig | None = None,
    *,
    overwrite: bool = False,
    **options,
) -> pd.DataFrame:
    """Perturb genes in the cells of ``tokens`` with the model in ``model_dir``; write and return the gene table.

    Each (cell, perturbation) gets the cosine similarity of the perturbed cell to its original
    and, with ``goal_state``, its shift toward the goal state's mean embedding (see
    :func:`~stformer.perturb.engine.perturbation_shifts`). Per gene (or gene set): the number of
    cells, mean and median similarity and shift, and a two-sided Mann-Whitney U test of its
    effects (the goal shift, else 1 - similarity) against a null of randomly chosen expressed
    genes of the same cells, perturbed the same way (``null_per_cell`` per cell), with
    Benjamini-Hochberg FDR (``scipy.stats.false_discovery_control``).

    Writes ``out/genes.csv`` and ``out/genes.parquet`` (sorted by FDR, then effect),
    ``out/cells.parquet`` (one row per cell and perturbation, null ones marked) and
    ``out/perturbation.png``. Options are a :class:`PerturbConfig` or its fields by keyword.

    >>> perturb("runs/pbmc/model", "tokens", "screen", state_column="cell_type",
    ...         start_state="CD14+ Monocyte", goal_state="Dendritic", max_cells=50)  # doctest: +SKIP
    """
    if config is not None and options:
        msg = "pass either config= or keyword options, not both"
        raise TypeError(msg)
    config = config or build_config(PerturbConfig, options)
    out = Path(out)
    if out.exists() and not overwrite:
        msg = f"{out} already exists; choose another output folder or pass overwrite=True (--overwrite)"
        raise FileExistsError(msg)
    data = load_from_disk(str(tokens)) if isinstance(tokens, (str, Path)) else tokens
    vocab = _vocabulary(model_dir, tokens)
    model, device = _model(model_dir, config.device)
    cells_idx = _chosen_cells(data, config)
    chosen = data.select(cells_idx)
    cells = [np.asarray(ids, dtype=np.int64) for ids in chosen[INPUT_IDS]]
    goals = _goals(model_dir, data, config)
    rng = np.random.default_rng(config.seed)
    wanted = _genes(config, vocab)
    perturbations, null = _perturbations(cells, wanted, config, vocab, rng)
    shifts = perturbation_shifts(
        model,
        cells,
        perturbations + null,
        config.perturbation,
        fraction=config.fraction,
        layer=config.layer,
        batch_size=config.batch_size,
        pad_id=vocab[PAD_TOKEN],
        goals=goals,
        bf16=bf16_is_fast(device.type),
    )
    names = {i: g for g, i in vocab.items()}
    cell_names = np.asarray(chosen[CELL_ID] if CELL_ID in data.column_names else cells_idx).astype(str)
    table = pd.DataFrame(
        {
            CELL_ID: [cell_names[p.cell] for p in perturbations + null],
            "gene": ["+".join(names[g] for g in p.genes) for p in perturbations + null],
            "null": np.arange(len(perturbations) + len(null)) >= len(perturbations),
            **shifts,
        }
    )
    skipped = int((~table["applied"] & ~table["null"]).sum())
    genes = gene_statistics(table, config)
    genes.attrs["skipped"] = skipped
    symbols = _symbols(config)
    genes.insert(1, "symbol", genes["gene"].map(lambda g: "+".join(symbols.get(x, x) for x in g.split("+"))))
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        table.to_parquet(tmp / CELLS_TABLE, index=False)
        genes.to_csv(tmp / f"{GENES_TABLE}.csv", index=False)
        genes.to_parquet(tmp / f"{GENES_TABLE}.parquet", index=False)
        plot_screen(genes, table, config, tmp / FIGURE)
    return genes


def effect_column(config: PerturbConfig) -> str:
    """The per-cell effect ranked and tested: the goal shift with a goal state, else 1 - similarity."""
    return f"goal_shift_{config.goal_state}" if config.goal_state is not None else "dissimilarity"


def gene_statistics(table: pd.DataFrame, config: PerturbConfig) -> pd.DataFrame:
    """Per gene: cells, mean/median similarity and effect, Mann-Whitney p against the null, BH FDR."""
    table = table[table["applied"]].assign(dissimilarity=lambda t: 1 - t["cosine_similarity"])
    effect = effect_column(config)
    null_values = table.loc[table["null"], effect].to_numpy()
    rows = []
    for gene, part in table[~table["null"]].groupby("gene", sort=True):
        values = part[effect].to_numpy()
        p_value = np.nan
        if len(null_values) and len(values):
            p_value = float(mannwhitneyu(values, null_values, alternative="two-sided").pvalue)
        row = {
            "gene": gene,
            "n_cells": len(part),
            "cosine_similarity_mean": float(part["cosine_similarity"].mean()),
            "cosine_similarity_median": float(part["cosine_similarity"].median()),
            "p_value": p_value,
        }
        for column in (c for c in part.columns if c.startswith("goal_shift_")):
            row[f"{column}_mean"] = float(part[column].mean())
            row[f"{column}_median"] = float(part[column].median())
        rows.append(row)
    genes = pd.DataFrame(rows)
    if genes.empty:
        msg = "no perturbation changed any cell (are the genes expressed in the chosen cells?)"
        raise InputError(msg)
    tested = genes["p_value"].notna()
    genes["fdr"] = np.nan
    if tested.any():
        genes.loc[tested, "fdr"] = false_discovery_control(genes.loc[tested, "p_value"].to_numpy())
    mean_effect = f"{effect}_mean" if effect != "dissimilarity" else "cosine_similarity_mean"
    ascending = effect == "dissimilarity"  # lower similarity = larger effect
    return genes.sort_values(["fdr", mean_effect], ascending=[True, ascending], na_position="last").reset_index(
        drop=True
    )


def plot_screen(genes: pd.DataFrame, table: pd.DataFrame, config: PerturbConfig, path: Path) -> Path:
    """Genes ranked by their mean effect, the null's central 95% as a band, the top 10 labelled."""
    effect = effect_column(config)
    column = f"{effect}_mean" if effect != "dissimilarity" else "cosine_similarity_mean"
    values = genes[column].to_numpy() if effect != "dissimilarity" else 1 - genes[column].to_numpy()
    order = np.argsort(-values)
    fig = new_figure(8, 4.5)
    ax = fig.subplots()
    ax.scatter(np.arange(len(order)), values[order], s=8, color="tab:blue", label="perturbed genes (mean over cells)")
    null = table.loc[table["null"] & table["applied"]]
    null_values = null[effect].to_numpy() if effect != "dissimilarity" else 1 - null["cosine_similarity"].to_numpy()
    if len(null_values):
        low, high = np.percentile(null_values, [2.5, 97.5])
        ax.axhspan(low, high, color="grey", alpha=0.25, label="random expressed genes: central 95%")
    for rank, index in enumerate(order[:10]):
        ax.annotate(genes["symbol"].iloc[index], (rank, values[index]), fontsize=7, rotation=45)
    ax.set_xlabel("gene rank")
    ylabel = f"shift toward {config.goal_state}" if effect != "dissimilarity" else "1 - cosine similarity to original"
    ax.set_ylabel(ylabel)
    ax.set_title(
        f"In silico {config.perturbation}: {len(genes)} genes, {table.loc[~table['null'], CELL_ID].nunique()} cells"
    )
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _vocabulary(model_dir, tokens) -> dict[str, int]:
    for folder in (Path(model_dir), Path(tokens) if isinstance(tokens, (str, Path)) else None):
        if folder is not None and (folder / VOCAB_FILE).exists():
            return load_token_dictionary(folder / VOCAB_FILE)
    msg = f"no {VOCAB_FILE} in {model_dir} or the token dataset; perturbation names genes through it"
    raise InputError(msg)


def _model(model_dir, device_option: str):
    from transformers import BertModel

    from .._kernels import use_fast_kernels

    if device_option == "cuda" and not torch.cuda.is_available():
        msg = "device='cuda' but no CUDA device is visible; use device='auto' or 'cpu'"
        raise InputError(msg)
    device = torch.device("cuda" if device_option != "cpu" and torch.cuda.is_available() else "cpu")
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval().to(device)
    return use_fast_kernels(model), device


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


def _goals(model_dir, data: Dataset, config: PerturbConfig) -> dict[str, np.ndarray]:
    """Mean embedding (hidden,) of the cells of the goal state and of each alternative state."""
    from ..embedding import embed

    if config.goal_state is None:
        return {}
    members = {
        str(state): matching_rows(data, {config.state_column: state})
        for state in [config.goal_state, *(config.alt_states or [])]
    }
    empty = [state for state, rows in members.items() if len(rows) == 0]
    if empty:
        msg = f"no cell has {config.state_column}={empty[0]!r} (goal or alternative state)"
        raise InputError(msg)
    rows = np.unique(np.concatenate(list(members.values())))  # every state's cells embedded in one pass
    cells = embed(model_dir, data.select(rows), layer=config.layer, progress=False)["cells"]
    return {state: cells[np.searchsorted(rows, chosen)].mean(0) for state, chosen in members.items()}


def _mapping(config: PerturbConfig) -> dict[str, str]:
    if config.gene_mapping is None:
        return {}
    return dict(
        config.gene_mapping if isinstance(config.gene_mapping, dict) else load_mapping_file(config.gene_mapping)
    )


def _symbols(config: PerturbConfig) -> dict[str, str]:
    return {ensembl: symbol for symbol, ensembl in _mapping(config).items()}


def _genes(config: PerturbConfig, vocab: dict[str, int]) -> list[int] | None:
    """Token ids of the listed genes (ids or symbols), or None for "all"."""
    if config.genes == "all":
        return None
    mapping = _mapping(config)
    tokens, unknown = [], []
    for gene in config.genes:
        gene_id = gene if gene in vocab else mapping.get(gene)
        (tokens.append(vocab[gene_id]) if gene_id in vocab else unknown.append(gene))
    if unknown:
        msg = f"genes {unknown[:5]} are not in the model's vocabulary (give Ensembl ids, or symbols with gene_mapping)"
        raise InputError(msg)
    return tokens


def _perturbations(cells, wanted, config: PerturbConfig, vocab, rng) -> tuple[list[Perturbation], list[Perturbation]]:
    """The screen's perturbations and the null's (random expressed genes of the same cells)."""
    anchor = None
    if config.anchor_gene is not None:
        anchor = _genes(PerturbConfig(genes=[config.anchor_gene], gene_mapping=config.gene_mapping), vocab)[0]
    screen, null = [], []
    for c, sequence in enumerate(cells):
        if wanted is None:
            groups = [(int(g),) for g in sequence if g != anchor]
        elif config.together:
            groups = [tuple(wanted)]
        else:
            groups = [(g,) for g in wanted if g != anchor]
        if anchor is not None:
            groups = [(anchor, *g) for g in groups]
        screen.extend(Perturbation(c, g) for g in groups)
        perturbed = {g for group in groups for g in group}
        candidates = np.asarray([g for g in sequence if g not in perturbed])
        draws = min(config.null_per_cell, len(candidates))
        for gene in rng.choice(candidates, draws, replace=False) if draws else []:
            null.append(Perturbation(c, ((anchor,) if anchor is not None else ()) + (int(gene),)))
    return screen, null
