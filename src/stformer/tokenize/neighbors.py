"""Spatial neighborhoods: k-nearest or radius graphs built per sample, or a stored graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .._errors import InputError


def spatial_graph(
    coords: np.ndarray,
    samples: np.ndarray | None = None,
    *,
    n_neighbors: int | None = 6,
    radius: float | None = None,
) -> sp.csr_matrix:
    """Binary neighbor graph (cells, cells) without self-loops; no edge joins two samples.

    coords: (cells, d) positions. ``n_neighbors`` nearest cells within ``radius`` (when set);
    ``n_neighbors=None`` keeps every cell within ``radius``.

    >>> g = spatial_graph(np.array([[0, 0], [1, 0], [9, 9]]), np.array(["a", "a", "b"]),
    ...                   n_neighbors=1)
    >>> g.toarray().astype(int).tolist()
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    """
    if n_neighbors is None and radius is None:
        msg = "give n_neighbors, radius or both to build a spatial graph"
        raise InputError(msg)
    coords = np.asarray(coords, dtype=np.float64)
    n = len(coords)
    if samples is None:
        samples = np.zeros(n, dtype=np.int64)
    rows, cols = [], []
    for sample in np.unique(samples):
        members = np.flatnonzero(samples == sample)
        if len(members) < 2:
            continue
        tree = cKDTree(coords[members])
        if n_neighbors is None:
            pairs = tree.query_pairs(radius, output_type="ndarray")
            pairs = np.concatenate([pairs, pairs[:, ::-1]])
            src, dst = pairs[:, 0], pairs[:, 1]
        else:
            k = min(n_neighbors + 1, len(members))
            bound = np.inf if radius is None else radius
            dist, idx = tree.query(coords[members], k=k, distance_upper_bound=bound)
            src = np.repeat(np.arange(len(members)), k)
            dst, dist = idx.ravel(), dist.ravel()
            ok = np.isfinite(dist) & (dst != src)
            src, dst = src[ok], dst[ok]
        rows.append(members[src])
        cols.append(members[dst])
    rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
    cols = np.concatenate(cols) if cols else np.empty(0, np.int64)
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    graph.data[:] = 1.0  # duplicates summed by the constructor count once
    return graph


def graph_from_connectivities(connectivities: sp.spmatrix) -> sp.csr_matrix:
    """Binary neighbor graph from a stored connectivity matrix, diagonal removed."""
    graph = sp.csr_matrix(connectivities, dtype=np.float64, copy=True)
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.data[:] = 1.0
    return graph


def neighbor_graph(src, config) -> sp.csr_matrix:
    """A file's neighbor graph (cells, cells) as the tokenizer builds it: stored, or built per sample.

    ``src``: an open :class:`~stformer.tokenize._sources.CountSource`; ``config``: a ``TokenizerConfig``.
    """
    if config.connectivities_key is not None:
        return graph_from_connectivities(src.obsp(config.connectivities_key))
    samples = None
    if config.sample_column is not None:
        samples = np.asarray(src.obs_column(config.sample_column)).astype(str)
    return spatial_graph(src.obsm(config.spatial_key), samples, n_neighbors=config.n_neighbors, radius=config.radius)
