"""Which perturbations a screen runs in each cell: the screened genes, each followed by its rank-matched draws."""

from __future__ import annotations

import numpy as np

from ..settings import PerturbConfig
from .engine import Perturbation


def plan_perturbations(cells, wanted, anchor, config: PerturbConfig, rng) -> dict:
    """The screen's perturbations, each followed by its rank-matched null ones.

    Returns ``perturbation`` (list), ``rank`` (1-based rank of the varied gene before the edit,
    0 when the cell does not express it) and ``null_for`` (index of the screened perturbation a
    null one belongs to, -1 for screened ones).
    """
    plan = {"perturbation": [], "rank": [], "null_for": []}
    listed = set(wanted or ()) | {anchor}
    for c, sequence in enumerate(cells):
        if wanted is None:
            groups = [(int(g),) for g in sequence if g != anchor]
        elif config.together:
            groups = [tuple(wanted)]
        else:
            groups = [(g,) for g in wanted if g != anchor]
        position = {int(g): i for i, g in enumerate(sequence)}
        fixed = (anchor,) if anchor is not None else ()
        for group in groups:
            varied = [g for g in group if g != anchor]
            screened = len(plan["perturbation"])
            plan["perturbation"].append(Perturbation(c, fixed + group))
            plan["rank"].append(position.get(varied[0], -1) + 1)
            plan["null_for"].append(-1)
            if config.perturbation != "overexpress" and varied[0] not in position:
                continue  # nothing to perturb, so nothing to compare
            # the screened genes themselves never enter a null set (in a genome-wide screen only this one's)
            excluded = set(group) | ({anchor} if wanted is None else listed)
            candidates = np.asarray([i for i, g in enumerate(sequence) if int(g) not in excluded])
            for null_group, null_rank in null_sets(sequence, candidates, varied, position, config.null_draws, rng):
                plan["perturbation"].append(Perturbation(c, fixed + null_group))
                plan["rank"].append(null_rank)
                plan["null_for"].append(screened)
    plan["null_for"] = np.asarray(plan["null_for"])
    return plan


def null_sets(sequence, candidates: np.ndarray, varied, position, draws: int, rng):
    """``draws`` sets like ``varied``, each gene replaced by one of the 2*draws candidates nearest its rank."""
    if len(candidates) < len(varied) or draws == 0:
        return []
    window = min(len(candidates), 2 * draws)
    nearest = []
    for gene in varied:
        at = np.searchsorted(candidates, position.get(gene, len(sequence)))  # candidates are sorted positions
        lo = int(np.clip(at - window // 2, 0, len(candidates) - window))
        nearest.append(candidates[lo : lo + window])
    sets = []
    for _ in range(draws):
        picked: list[int] = []
        for near in nearest:
            free = near[~np.isin(near, picked)]
            picked.append(int(rng.choice(free if len(free) else np.setdiff1d(candidates, picked))))
        sets.append((tuple(int(sequence[i]) for i in picked), int(picked[0]) + 1))
    return sets
