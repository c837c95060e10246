"""Attention probabilities of a batch of cells, and their sums by gene identity.

A cell's attention from gene i to gene j is the attention probability from i's position to j's,
averaged over the chosen layers and heads, times the number of genes in the cell
(``n_c * a_c(i -> j)``): uniform attention gives 1 whatever the cell's length, so cells of
different lengths are comparable. An edge's weight is its mean over the cells holding both genes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._datasets import pad_right

SCORE_BUDGET = 2**26  # attention scores (cells x heads x positions x positions) computed at once: 256 MB in fp32


def attention_layers(model) -> list:
    """The self-attention modules of a BERT encoder, first to last (an empty list if it has none)."""
    layers = getattr(getattr(model, "encoder", None), "layer", None) or []
    return [layer.attention.self for layer in layers if hasattr(getattr(layer, "attention", None), "self")]


def cell_attention(
    model, sequences: Sequence[Sequence[int]], pad_id: int, layers: list[int], heads: list[int], bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention probabilities of a batch, averaged over ``layers`` and ``heads``.

    The batch is padded on the right to its longest cell and runs on the model's device (bf16
    autocast when ``bf16``). Each chosen layer's probabilities are recomputed from its input hidden
    states (BERT applies self-attention to the layer's input), so any attention kernel serves.
    Returns ``(attention, ids)`` on the CPU: (batch, width, width) float32, rows summing to 1 over
    the cell's positions, and the (batch, width) token ids (padding: ``pad_id``).
    """
    device = next(model.parameters()).device
    ids, mask = pad_right(sequences, pad_id)  # (batch, width)
    ids, mask = ids.to(device), mask.to(device)
    batch, width = ids.shape
    modules = attention_layers(model)
    total = torch.zeros(batch, width, width, device=device)
    per_pass = max(1, SCORE_BUDGET // (len(heads) * width * width))  # cells whose scores fit the budget
    blocked = ~mask.bool()[:, None, None, :]  # (batch, 1, 1, width): padding receives no attention
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for layer in layers:
            attention = modules[layer]
            size = attention.attention_head_size
            for start in range(0, batch, per_pass):
                hidden = states[layer][start : start + per_pass]  # (cells, width, hidden): the layer's input
                shape = (*hidden.shape[:2], -1, size)
                query = attention.query(hidden).view(shape).transpose(1, 2)[:, heads]  # (cells, heads, width, size)
                key = attention.key(hidden).view(shape).transpose(1, 2)[:, heads]
                scores = (query.float() @ key.float().transpose(-1, -2)) * size**-0.5  # (cells, heads, width, width)
                scores = scores.masked_fill(blocked[start : start + per_pass], float("-inf"))
                total[start : start + per_pass] += torch.softmax(scores, dim=-1).mean(1)
    return (total / len(layers)).cpu(), ids.cpu()


class GeneSums:
    """Running sums of length-scaled attention by gene pair, per group of cells (states).

    ``gene_index``: (vocabulary,) int64 mapping a token id to its row among the network's genes,
    -1 for any other token (special tokens, padding, genes left out). Memory is (groups, genes,
    genes) float64 sums and counts, whatever the number of cells.
    """

    def __init__(self, gene_index: torch.Tensor, n_genes: int, n_groups: int = 1):
        self.gene_index, self.n_genes = gene_index, n_genes
        self.sums = torch.zeros(n_groups, n_genes * n_genes, dtype=torch.float64)  # (groups, genes^2) flat
        self.counts = torch.zeros(n_groups, n_genes * n_genes, dtype=torch.float64)
        self.gene_cells = torch.zeros(n_groups, n_genes, dtype=torch.float64)  # cells holding each gene

    def pairs(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positions of the network's genes in one cell (a gene's first occurrence) and their flat pair index.

        ``ids``: (width,) one cell's token ids (neighborhood cells can hold a gene twice: the
        spot's own and its neighbors'; the first is the spot's). Returns ``(positions (k,),
        genes (k,), pair (k, k))``, ``pair[a, b] = genes[a] * n_genes + genes[b]``.
        """
        rows = self.gene_index[ids]  # (width,) -1: not a network gene
        present = torch.nonzero(rows >= 0).squeeze(1)
        _, first = np.unique(rows[present].numpy(), return_index=True)
        positions = present[torch.from_numpy(first)]
        genes = rows[positions]
        return positions, genes, genes[:, None] * self.n_genes + genes[None, :]

    def add(self, attention: torch.Tensor, ids: torch.Tensor, n_genes_in_cells: torch.Tensor, groups: torch.Tensor):
        """Add a batch: attention (batch, width, width), ids (batch, width), genes per cell (batch,), group (batch,)."""
        for cell in range(len(ids)):
            positions, genes, pair = self.pairs(ids[cell])
            off_diagonal = ~torch.eye(len(genes), dtype=torch.bool)  # (k, k): no self edges
            weights = attention[cell][positions][:, positions] * n_genes_in_cells[cell]  # (k, k) length-scaled
            group = int(groups[cell])
            self.sums[group].index_add_(0, pair[off_diagonal], weights[off_diagonal].double())
            self.counts[group].index_add_(
                0, pair[off_diagonal], torch.ones(int(off_diagonal.sum()), dtype=torch.float64)
            )
            self.gene_cells[group, genes] += 1

    def reduced(self, all_reduce) -> GeneSums:
        """These sums added over ranks by ``all_reduce`` (a function of a tensor)."""
        self.sums, self.counts, self.gene_cells = (all_reduce(t) for t in (self.sums, self.counts, self.gene_cells))
        return self
