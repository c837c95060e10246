"""The screen's figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import CELL_ID
from .._figures import new_figure, save_figure
from ..settings import PerturbConfig


def plot_screen(genes: pd.DataFrame, table: pd.DataFrame, config: PerturbConfig, path: Path) -> Path:
    """Each gene's effect against random genes, genes ranked; the table's top 10 labelled with 95% intervals."""
    values = genes["effect"].to_numpy()
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf))
    position = np.empty(len(order), dtype=int)
    position[order] = np.arange(len(order))  # each gene's place in the ranking
    fig = new_figure(8, 4.5)
    ax = fig.subplots()
    ax.scatter(position, values, s=8, color="tab:blue", label="perturbed genes: effect against rank-matched draws")
    significant = np.flatnonzero(genes["fdr"].to_numpy() < 0.05)
    if len(significant):
        ax.scatter(position[significant], values[significant], s=14, color="tab:red", label="FDR < 0.05")
    top = np.arange(min(10, len(genes)))  # the table's top 10 (FDR, p-value)
    low, high = genes["effect_ci_low"].to_numpy()[top], genes["effect_ci_high"].to_numpy()[top]
    ax.errorbar(position[top], values[top], yerr=[values[top] - low, high - values[top]], fmt="none",
                ecolor="black", elinewidth=0.8, capsize=2, label="95% interval (cells resampled)")  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8, label="rank-matched random genes of the same cells")
    for k, index in enumerate(top):  # text staggered
        ax.annotate(
            genes["symbol"].iloc[index],
            (position[index], values[index]),
            xytext=(12, 40 - 9 * k),
            textcoords="offset points",
            fontsize=7,
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"},
        )
    ax.set_xlabel("gene rank")
    measure = f"shift toward {config.goal_state}" if config.goal_state is not None else "1 - cosine similarity"
    ax.set_ylabel(f"effect: {measure}, minus null")
    cells = table.loc[~table["null"], CELL_ID].nunique()
    ax.set_title(f"In silico {config.perturbation}: {len(genes)} genes, {cells} cells")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
