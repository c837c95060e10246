"""A slow, obviously-correct rank-value tokenizer used as the oracle in tests."""

import numpy as np


def rank_value_reference(counts, gene_ids, totals, medians, vocab, max_length):
    """Per cell: expressed vocabulary genes by count/total*1e4/median (float32), ties by id."""
    counts = np.asarray(counts, dtype=np.float64)
    out = []
    for row, total in zip(counts, totals, strict=True):
        values = {}
        for j, gene in enumerate(gene_ids):
            if row[j] > 0 and gene in vocab and gene in medians:
                values[vocab[gene]] = values.get(vocab[gene], 0.0) + row[j]
        scored = {
            t: np.float32(c / total * 10_000 / medians[g])
            for g, t in vocab.items()
            for c in [values.get(t)]
            if c is not None
        }
        out.append(sorted(scored, key=lambda t: (-scored[t], t))[:max_length])
    return out
