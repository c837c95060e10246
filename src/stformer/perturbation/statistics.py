"""A screen's statistics: each gene against rank-matched random genes, the cell as the unit.

The null hypothesis, for a gene g: perturbing g moves the screened cells no more than perturbing
a random gene that the same cells express at about g's rank. Two sources of variation enter:

- cells: in each cell c, g's effect is compared with its rank-matched draws,
  ``d_gc = effect_gc - median(draws_gc)``; g's effect is the mean of ``d_gc`` over its cells,
  with a 95% percentile bootstrap interval from resampling cells (so n cells are n
  observations, however many draws each has);
- genes: random genes differ from one another (each has a fixed effect in the model), so the
  reference is the spread of random genes' effects: their median ``mu0`` and between-gene
  standard deviation ``tau``, with ``tau^2 = (1.4826 MAD)^2 - median(se^2)`` over genes' effects
  (a random-effects variance, robust to the drivers among them). With at least
  ``EMPIRICAL_NULL_GENES`` genes tested (a genome-wide screen), those genes are the reference (an
  empirical null, Efron 2004: most genes move a cell no more than random ones); with fewer, the
  draws, grouped by the gene drawn (each draw minus the median of the rest of its group).

``z = (effect_g - mu0) / sqrt(tau^2 + se_g^2)`` with ``se_g`` the cells' standard error (the
variance over cells at least the typical gene's; ``MIN_CELLS`` cells or more), a
two-sided normal p-value, and Benjamini-Hochberg FDR over genes. (A test on the cells alone, paired
or not, is miscalibrated: paired, it calls genes with small fixed effects of the model's own even
in a classifier trained on shuffled labels; unpaired, it is conservative, since a gene and its
draws share their cell.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, false_discovery_control, norm
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestCentroid

from .._constants import CELL_ID
from .._errors import InputError

GOAL_SHIFT = "goal_shift"
BOOTSTRAP_RESAMPLES = 999
MAD_TO_SD = 1.4826  # a normal distribution's standard deviation per median absolute deviation
MIN_CELLS = 3  # cells a gene needs for a p-value
EMPIRICAL_NULL_GENES = 20  # genes tested from which on they are their own reference (else the draws)


def effect_column(goal_state: str | None) -> str:
    """The per-cell effect ranked and tested: the goal shift with a goal state, else 1 - similarity."""
    return GOAL_SHIFT if goal_state is not None else "dissimilarity"


def gene_statistics(table: pd.DataFrame, goal_state: str | None, *, seed: int = 0) -> pd.DataFrame:
    """One row per screened gene: cells, mean similarity and shifts, effect vs null with its 95% interval, p, FDR.

    ``table`` is a screen's per-cell table (``cells.parquet``): one row per (cell, perturbation),
    null rows marked by ``null`` and tied to their screened gene by ``null_for``. ``effect`` is
    the mean over cells of the gene's effect minus the median of its draws in that cell;
    ``effect_ci_low`` / ``effect_ci_high`` its bootstrap interval over cells; ``p_value`` its
    test against random genes (module docstring). ``genes.attrs["random_genes"]`` holds ``mu0``,
    ``tau`` and what they came ``from``. Sorted by FDR, p-value, then effect, strongest first.
    """
    table = table[table["applied"]].assign(dissimilarity=lambda t: 1 - t["cosine_similarity"])
    effect = effect_column(goal_state)
    # each screened (gene, cell) with its draws is one group; every member minus the median of the others
    group = np.where(table["null"], table["null_for"], table["gene"])
    members = pd.DataFrame({"group": group, CELL_ID: table[CELL_ID].to_numpy()}).groupby(["group", CELL_ID]).ngroup()
    difference = table[effect].to_numpy() - leave_one_out_medians(members.to_numpy(), table[effect].to_numpy())
    table = table.assign(difference=difference)
    screened = _gene_effects(table[~table["null"]])
    reference = "screened genes" if len(screened) >= EMPIRICAL_NULL_GENES else "draws"
    mu0, tau = _spread(screened if reference == "screened genes" else _gene_effects(table[table["null"]]))
    floor = float(screened["var"].median()) if len(screened) else np.nan  # the typical gene's variance over cells
    shift_columns = [c for c in table.columns if c == GOAL_SHIFT or c.startswith("shift_to_")]
    rng = np.random.default_rng(seed)
    rows = []
    for gene, part in table[~table["null"]].groupby("gene", sort=True):
        differences = part["difference"].dropna().to_numpy()  # (cells with draws,)
        row = {
            "gene": gene,
            "n_cells": len(part),
            "cosine_similarity_mean": float(part["cosine_similarity"].mean()),
            "cosine_similarity_median": float(part["cosine_similarity"].median()),
        }
        for column in shift_columns:
            row[f"{column}_mean"] = float(part[column].mean())
            row[f"{column}_median"] = float(part[column].median())
        row.update(_versus_random_genes(differences, mu0, tau, floor, rng))
        rows.append(row)
    genes = pd.DataFrame(rows)
    if genes.empty:
        msg = "no perturbation changed any cell (are the genes expressed in the chosen cells?)"
        raise InputError(msg)
    tested = genes["p_value"].notna()
    genes["fdr"] = np.nan
    if tested.any():
        genes.loc[tested, "fdr"] = false_discovery_control(genes.loc[tested, "p_value"].to_numpy())
    genes["_strength"] = -genes["effect"].abs()  # equal FDRs (BH ties them often): the stronger evidence first
    genes = genes.sort_values(["fdr", "p_value", "_strength"], na_position="last").drop(columns="_strength")
    genes = genes.reset_index(drop=True)
    genes.attrs["random_genes"] = {"mu0": mu0, "tau": tau, "from": reference}
    return genes


def _gene_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """Per gene of ``rows`` (with two cells or more): mean difference, its variance and count."""
    stats = rows.dropna(subset=["difference"]).groupby("gene")["difference"].agg(["mean", "var", "size"])
    return stats[stats["size"] >= 2]


def _spread(stats: pd.DataFrame) -> tuple[float, float]:
    """Median ``mu0`` and robust between-gene standard deviation ``tau`` of genes' effects (NaN under 3 genes)."""
    if len(stats) < 3:
        return np.nan, np.nan
    mu0 = float(stats["mean"].median())
    spread = MAD_TO_SD * float(np.median(np.abs(stats["mean"] - mu0)))
    within = float(np.median(stats["var"] / stats["size"]))
    return mu0, float(np.sqrt(max(spread**2 - within, 0.0)))


def leave_one_out_medians(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(n,) for each row, the median of the other rows of its group (NaN in a group of one).

    >>> leave_one_out_medians(np.array([0, 0, 0, 1]), np.array([1.0, 2.0, 9.0, 5.0])).tolist()
    [5.5, 5.0, 1.5, nan]
    """
    order = np.lexsort((values, groups))
    sorted_groups, sorted_values = groups[order], values[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    start, rest = np.repeat(starts, sizes), np.repeat(sizes, sizes) - 1  # (n,) group start, others in group
    own = np.arange(len(order)) - start  # each row's place in its sorted group

    def other(k: np.ndarray) -> np.ndarray:  # the k-th smallest of the others
        return sorted_values[np.minimum(start + k + (k >= own), len(order) - 1)]

    medians = (other((rest - 1) // 2) + other(rest // 2)) / 2
    medians[rest == 0] = np.nan
    out = np.empty(len(order))
    out[order] = medians
    return out


def _versus_random_genes(
    differences: np.ndarray, mu0: float, tau: float, floor: float, rng: np.random.Generator
) -> dict:
    """Effect (mean difference over cells), its 95% bootstrap interval, and the p-value against random genes.

    Tested from ``MIN_CELLS`` cells on; the variance over cells is at least ``floor`` (the typical
    gene's), so that a gene seen in a few cells that happen to agree is not taken as certain.
    """
    n = len(differences)
    out = {"n_null_cells": n, "effect": float(differences.mean()) if n else np.nan}
    out["effect_ci_low"] = out["effect_ci_high"] = out["p_value"] = np.nan
    if n < MIN_CELLS or np.isnan(tau):
        return out
    se2 = max(float(differences.var(ddof=1)), floor) / n
    if tau**2 + se2 > 0:
        out["p_value"] = float(2 * norm.sf(abs(out["effect"] - mu0) / np.sqrt(tau**2 + se2)))
    if np.ptp(differences) > 0:
        interval = bootstrap(
            (differences,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", rng=rng
        ).confidence_interval
        out["effect_ci_low"], out["effect_ci_high"] = float(interval.low), float(interval.high)
    return out


def state_separation(start: np.ndarray, goal: np.ndarray, *, seed: int = 0) -> float | None:
    """Cross-validated balanced accuracy of a nearest-centroid rule telling start from goal cells (chance 0.5).

    ``start`` (n, hidden) and ``goal`` (m, hidden) are cell embeddings in the space the screen
    compares. Near 0.5 the space cannot tell the states apart, so shifts toward the goal say
    little. None when either side has fewer than 2 cells.
    """
    folds = min(5, len(start), len(goal))
    if folds < 2:
        return None
    x = np.concatenate([start, goal])  # (n + m, hidden)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # the screen compares directions (cosines)
    y = np.r_[np.zeros(len(start)), np.ones(len(goal))]
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(NearestCentroid(), x, y, cv=split, scoring="balanced_accuracy").mean())
