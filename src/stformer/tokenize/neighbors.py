"""Spatial neighborhoods: k-nearest or radius neighbors found per sample, or a stored graph."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .._errors import InputError

Neighbors = Callable[[np.ndarray], sp.csr_matrix]  # rows (r,) -> their binary neighbor rows (r, cells)


def spatial_neighbors(
    coords: np.ndarray,
    samples: np.ndarray | None = None,
    *,
    n_neighbors: int | None = 6,
    radius: float | None = None,
) -> Neighbors:
    """The neighbors of any rows, found when asked: no self-loops, no edge joining two samples.

    coords: (cells, d) positions. ``n_neighbors`` nearest cells within ``radius`` (when set);
    ``n_neighbors=None`` keeps every cell within ``radius``. One tree per sample is built here;
    asking for a few rows of a million cells queries only those rows.

    >>> rows_of = spatial_neighbors(np.array([[0, 0], [1, 0], [9, 9]]), np.array(["a", "a", "b"]),
    ...                             n_neighbors=1)
    >>> rows_of(np.array([1, 2])).toarray().astype(int).tolist()
    [[1, 0, 0], [0, 0, 0]]
    """
    if n_neighbors is None and radius is None:
        msg = "give n_neighbors, radius or both to find spatial neighbors"
        raise InputError(msg)
    coords = np.asarray(coords, dtype=np.float64)
    n = len(coords)
    samples = np.zeros(n, dtype=np.int64) if samples is None else np.unique(samples, return_inverse=True)[1]
    n_samples = samples.max(initial=-1) + 1

    def by_sample(of: np.ndarray) -> list[np.ndarray]:  # positions in ``of`` (sample codes), per sample
        order = np.argsort(of, kind="stable")
        return np.split(order, np.searchsorted(of[order], np.arange(1, n_samples)))

    groups = by_sample(samples)  # each sample's cells, ascending
    trees = {s: cKDTree(coords[members]) for s, members in enumerate(groups) if len(members) >= 2}

    def rows_of(rows: np.ndarray) -> sp.csr_matrix:
        rows = np.asarray(rows, dtype=np.int64)
        asked_by_sample = by_sample(samples[rows])  # positions in rows
        src, dst = [], []
        for s, tree in trees.items():
            members, asked = groups[s], asked_by_sample[s]
            if len(asked) == 0:
                continue
            points = coords[rows[asked]]
            if n_neighbors is None:
                pairs = cKDTree(points).sparse_distance_matrix(tree, radius, output_type="ndarray")  # records i, j
                at, local = asked[pairs["i"]], pairs["j"].astype(np.int64)
                ok = np.ones(len(pairs), dtype=bool)
            else:
                k = min(n_neighbors + 1, len(members))
                bound = np.inf if radius is None else radius
                dist, local = tree.query(points, k=k, distance_upper_bound=bound)  # (asked, k)
                at, local, ok = np.repeat(asked, k), local.ravel(), np.isfinite(dist.ravel())
            ok[ok] = members[local[ok]] != rows[at[ok]]  # no self-loops
            src.append(at[ok])
            dst.append(members[local[ok]])
        src = np.concatenate(src) if src else np.empty(0, np.int64)
        dst = np.concatenate(dst) if dst else np.empty(0, np.int64)
        return sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(len(rows), n))

    return rows_of


def graph_from_connectivities(connectivities: sp.spmatrix) -> sp.csr_matrix:
    """Binary neighbor graph from a stored connectivity matrix, diagonal removed."""
    graph = sp.csr_matrix(connectivities, dtype=np.float64, copy=True)
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.data[:] = 1.0
    return graph


def file_neighbors(src, config) -> Neighbors:
    """A file's neighbors as the tokenizer finds them: from the stored graph, or per sample.

    ``src``: an open :class:`~stformer.tokenize._sources.CountSource`; ``config``: a ``TokenizerConfig``.
    """
    if config.connectivities_key is not None:
        graph = graph_from_connectivities(src.obsp(config.connectivities_key))
        return lambda rows: graph[rows]
    samples = None
    if config.sample_column is not None:
        samples = np.asarray(src.obs_column(config.sample_column)).astype(str)
    return spatial_neighbors(
        src.obsm(config.spatial_key), samples, n_neighbors=config.n_neighbors, radius=config.radius
    )


def neighbor_graph(src, config) -> sp.csr_matrix:
    """A file's whole neighbor graph (cells, cells), as the tokenizer reads it."""
    return file_neighbors(src, config)(np.arange(src.n_obs))
