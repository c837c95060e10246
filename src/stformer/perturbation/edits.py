"""How each perturbation edits a cell's rank-value sequence (token ids, highest-ranked first)."""

from __future__ import annotations

import numpy as np


def perturb_sequence(tokens: np.ndarray, genes: np.ndarray, kind: str, fraction: float = 0.25) -> np.ndarray | None:
    """The sequence (n,) after perturbing ``genes`` (applied in order); None when nothing changes.

    - ``delete``: each gene leaves the sequence; the genes below it move up a rank. A gene the
      cell does not express cannot be deleted (None).
    - ``overexpress``: each gene moves to rank 1 (index 0), or is inserted there if the cell did
      not express it; the genes above its old rank move down one (a gene already at rank 1
      leaves the sequence as it was, and the cell's similarity to itself is 1).
    - ``inhibit`` / ``activate``: each expressed gene moves down / up by ``round(fraction * n)``
      ranks (at least one), stopping at the last / first rank; unexpressed genes are skipped.

    >>> perturb_sequence(np.array([7, 5, 9]), np.array([5]), "delete").tolist()
    [7, 9]
    >>> perturb_sequence(np.array([7, 5, 9]), np.array([9]), "overexpress").tolist()
    [9, 7, 5]
    """
    out = np.asarray(tokens)
    changed = False
    for gene in np.asarray(genes).ravel():
        where = np.flatnonzero(out == gene)
        if kind == "overexpress":  # a gene already at rank 1 stays: the cell is its own perturbation
            out = np.concatenate([[gene], np.delete(out, where)])
            changed = True
            continue
        if not len(where):
            continue
        position = int(where[0])
        rest = np.delete(out, position)
        if kind == "delete":
            out, changed = rest, True
            continue
        step = max(1, round(fraction * len(out)))
        target = min(position + step, len(out) - 1) if kind == "inhibit" else max(position - step, 0)
        if target != position:
            out, changed = np.insert(rest, target, gene), True
    return out.astype(np.asarray(tokens).dtype) if changed else None
