"""Batched in silico perturbation: many cells' perturbed copies per forward pass, each compared with its original."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .._inference import hidden_states
from .edits import perturb_sequence


@dataclass(frozen=True)
class Perturbation:
    """Genes (token ids) perturbed together in one cell."""

    cell: int  # index of the cell in the list of cells
    genes: tuple[int, ...]  # token ids


def _encode(
    model, sequences: Sequence[np.ndarray], layer: int, pad_id: int, bf16: bool, frame=None
) -> list[torch.Tensor]:
    """Hidden states of ``layer`` for each sequence's genes, (length, hidden) float64 on the CPU, in input order.

    With ``frame`` (``<cls>``, ``<eos>`` ids: V2 models) each sequence is read between them and
    their states are left out. float64 from here on: a deletion's 1 - similarity can be ~1e-6, a
    few float32 steps below 1.
    """
    if frame is not None:
        sequences = [np.concatenate([[frame[0]], seq, [frame[1]]]) for seq in sequences]
    states = hidden_states(model, sequences, layer, pad_id, bf16)[0].double()  # (batch, width, hidden)
    inner = 1 if frame is not None else 0
    return [states[row, inner : len(seq) - inner] for row, seq in enumerate(sequences)]


FULL_LENGTH = 2048  # batch_size counts sequences of this length; shorter ones share a pass in proportion


def _batches(lengths: Sequence[int], batch_size: int) -> list[slice]:
    """Consecutive slices of items sorted longest first, each at most ``batch_size`` x 2,048 tokens padded.

    >>> _batches([2048, 1000, 1000, 500], 1)
    [slice(0, 1, None), slice(1, 3, None), slice(3, 4, None)]
    """
    budget, out, start = batch_size * FULL_LENGTH, [], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and (end - start + 1) * lengths[start] <= budget:
            end += 1
        out.append(slice(start, end))
        start = end
    return out


def _rows_of(sequence: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Index in ``sequence`` of each of ``tokens`` (all present): the alignment by token, not position."""
    order = np.argsort(sequence, kind="stable")
    return order[np.searchsorted(sequence, tokens, sorter=order)]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def perturbation_shifts(
    model,
    cells: Sequence[np.ndarray],
    perturbations: Sequence[Perturbation],
    kind: str,
    *,
    fraction: float = 0.25,
    layer: int = -1,
    batch_size: int = 8,
    pad_id: int = 0,
    goals: Mapping[str, np.ndarray] | None = None,
    bf16: bool = False,
    gene_shifts: bool = False,
    frame: tuple[int, int] | None = None,
    similarity: str = "cell",
) -> dict:
    """Cosine similarity of each perturbed cell to its original, and its shift toward each goal.

    A cell's embedding is the mean of ``layer``'s hidden states over the genes that the original
    and the perturbed sequence share, matched by token (the perturbed genes excluded on both
    sides), so both means run over the same genes. ``similarity="cell"`` compares those two
    means; ``"genes"`` averages each shared gene's own cosine similarity before and after
    (Geneformer's cell value without cell states). With ``goals`` (result name -> (hidden,) mean
    embedding of a state's cells) also ``cos(perturbed, goal) - cos(original, goal)``. With
    ``gene_shifts``, for every shared gene the cosine similarity of its own hidden state before
    and after (matched by token).

    Cells are processed in groups: the originals once, then their perturbed copies sorted by
    length, padded only to the longest of a pass; a pass holds ``batch_size`` sequences of
    2,048 genes, or proportionally more shorter ones. A perturbation listed twice is computed
    once. Returns, in the order of
    ``perturbations``: ``"cosine_similarity"`` (m,), ``"applied"`` (m,) bool,
    one (m,) array per goal (NaN where a perturbation changes nothing, e.g. deleting a gene
    the cell does not express) and with ``gene_shifts`` ``"gene_shifts"``: m entries of
    (tokens (k,), cosine similarities (k,)) or None. ``cells`` hold genes only; with ``frame``
    (V2 models) every sequence is read between ``<cls>`` and ``<eos>``.
    """
    goals = {name: torch.as_tensor(vector, dtype=torch.float64) for name, vector in (goals or {}).items()}
    m = len(perturbations)
    result = {"cosine_similarity": np.full(m, np.nan), "applied": np.zeros(m, dtype=bool)}
    result.update({name: np.full(m, np.nan) for name in goals})
    shifts_of_genes: list = [None] * m
    first: dict[Perturbation, int] = {}  # each distinct perturbation -> its first index
    by_cell: dict[int, list[int]] = {}
    for index, perturbation in enumerate(perturbations):
        if first.setdefault(perturbation, index) == index:
            by_cell.setdefault(perturbation.cell, []).append(index)
    cell_ids = sorted(by_cell, key=lambda c: -len(cells[c]))
    for part in _batches([len(cells[c]) for c in cell_ids], batch_size):
        chunk = cell_ids[part]
        originals = dict(zip(chunk, _encode(model, [cells[c] for c in chunk], layer, pad_id, bf16, frame), strict=True))
        jobs = []
        for c in chunk:
            for index in by_cell[c]:
                edited = perturb_sequence(cells[c], np.asarray(perturbations[index].genes), kind, fraction)
                if edited is not None:
                    jobs.append((index, c, edited))
        jobs.sort(key=lambda job: -len(job[2]))
        for part in _batches([len(job[2]) for job in jobs], batch_size):
            batch = jobs[part]
            states = _encode(model, [edited for _, _, edited in batch], layer, pad_id, bf16, frame)
            for (index, c, edited), perturbed_states in zip(batch, states, strict=True):
                original, perturbed_genes = cells[c], np.asarray(perturbations[index].genes)
                shared = edited[np.isin(edited, original) & ~np.isin(edited, perturbed_genes)]  # (k,) tokens
                if len(shared) == 0:
                    continue
                before_rows = originals[c][torch.as_tensor(_rows_of(original, shared))]  # (k, hidden)
                after_rows = perturbed_states[torch.as_tensor(_rows_of(edited, shared))]  # (k, hidden)
                before, after = before_rows.mean(0), after_rows.mean(0)  # (hidden,)
                per_gene = (  # (k,) each shared gene's own cosine, only where asked for
                    torch.nn.functional.cosine_similarity(before_rows, after_rows, dim=1)
                    if gene_shifts or similarity == "genes"
                    else None
                )
                result["applied"][index] = True
                result["cosine_similarity"][index] = (
                    _cosine(before, after) if similarity == "cell" else float(per_gene.mean())
                )
                for name, goal in goals.items():
                    result[name][index] = _cosine(after, goal) - _cosine(before, goal)
                if gene_shifts:
                    shifts_of_genes[index] = (shared, per_gene.numpy())
    for index, perturbation in enumerate(perturbations):  # repeated perturbations share the first's results
        if first[perturbation] != index:
            for values in result.values():
                values[index] = values[first[perturbation]]
            shifts_of_genes[index] = shifts_of_genes[first[perturbation]]
    if gene_shifts:
        result["gene_shifts"] = shifts_of_genes
    return result


def cell_embeddings(
    model,
    cells: Sequence[np.ndarray],
    *,
    layer: int = -1,
    batch_size: int = 8,
    pad_id: int = 0,
    bf16: bool = False,
    frame: tuple[int, int] | None = None,
) -> np.ndarray:
    """(n_cells, hidden) mean of ``layer``'s hidden states over each cell's genes, in the perturbations' precision."""
    order = np.argsort([-len(c) for c in cells], kind="stable")  # similar lengths share a pass
    out = np.zeros((len(cells), model.config.hidden_size))
    for part in _batches([len(cells[r]) for r in order], batch_size):
        rows = order[part]
        states = _encode(model, [cells[r] for r in rows], layer, pad_id, bf16, frame)
        out[rows] = torch.stack([s.mean(0) for s in states]).numpy()
    return out
