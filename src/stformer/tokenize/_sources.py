"""Readers that stream rows of a count matrix from h5ad (backed) and loom files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp
from anndata.io import read_elem, sparse_dataset

from .._errors import InputError, InputKeyError
from .._warnings import StformerWarning

SUFFIXES = (".h5ad", ".loom")
RUN_GAP = 64  # rows apart that take_rows still reads as one block (cheaper than another read)


def find_data_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of ``.h5ad``/``.loom`` files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES)
            if not found:
                msg = f"{p}: folder holds no .h5ad or .loom files"
                raise FileNotFoundError(msg)
            files.extend(found)
        elif not p.exists():
            msg = f"{p}: file not found"
            raise FileNotFoundError(msg)
        elif p.suffix.lower() not in SUFFIXES:
            msg = f"{p}: unsupported file type {p.suffix!r}; expected .h5ad or .loom"
            raise InputError(msg)
        else:
            files.append(p)
    if not files:
        msg = "no input files given"
        raise InputError(msg)
    return files


class CountSource:
    """Row access to one file's count matrix (cells x genes) and its cell metadata."""

    path: Path
    n_obs: int
    raw_gene_ids: np.ndarray  # (n_genes,) identifiers of the matrix columns, as stored

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as CSR float64, shape (stop - start, n_genes)."""
        raise NotImplementedError

    def take_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows at sorted unique indices ``rows`` as CSR float64.

        Rows less than ``RUN_GAP`` apart are read as one block (a neighborhood's rows cluster in
        spatially ordered files, even across slides), so a chunk's neighbors cost a few reads
        rather than one per row.
        """
        if len(rows) == 0:
            return sp.csr_matrix((0, len(self.raw_gene_ids)))
        runs = np.split(rows, np.flatnonzero(np.diff(rows) > RUN_GAP) + 1)
        parts = [self.read_rows(int(run[0]), int(run[-1]) + 1)[run - run[0]] for run in runs]
        return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")

    def obs_column(self, name: str) -> np.ndarray | None:
        """One cell-metadata column, or ``None`` when absent."""
        raise NotImplementedError

    def obs_names(self) -> np.ndarray:
        """Cell identifiers as strings, shape (n_obs,)."""
        raise NotImplementedError

    def obsm(self, key: str) -> np.ndarray | None:
        """A per-cell array such as spatial coordinates (n_obs, d), or ``None`` when absent."""
        raise NotImplementedError

    def obsp(self, key: str) -> sp.csr_matrix | None:
        """A cell x cell sparse matrix such as spatial connectivities, or ``None`` when absent."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handle."""

    def __enter__(self) -> CountSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_csr(block: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    return sp.csr_matrix(block, dtype=np.float64)


class H5adSource(CountSource):
    """An ``.h5ad`` file read lazily with h5py and anndata's backed sparse datasets."""

    def __init__(self, path: Path, *, layer: str | None = None, gene_id_column: str | None = None):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            msg = (
                f"{self.path}: not a readable h5ad (HDF5) file ({err}); it may be truncated by an "
                "interrupted copy or be another format: copy or write it again (AnnData.write_h5ad)"
            )
            raise InputError(msg) from err
        f = self._file
        if layer in (None, "X"):
            elem, var_key = f.get("X"), "var"
        elif layer == "raw":
            elem, var_key = f.get("raw/X"), "raw/var"
        else:
            elem, var_key = f.get(f"layers/{layer}"), "var"
        if elem is None:
            layers = list(f["layers"].keys()) if "layers" in f else []
            options = ["X"] + (["raw"] if "raw" in f else []) + layers
            msg = f"{self.path}: layer {layer!r} not found; available: {options}"
            raise InputKeyError(msg)
        self._csr_group = None
        if isinstance(elem, h5py.Group):
            encoding = elem.attrs.get("encoding-type", "")
            self._matrix = sparse_dataset(elem)
            if encoding == "csr_matrix":
                self._csr_group = elem  # rows are read straight from data/indices/indptr
            if encoding == "csc_matrix":
                warnings.warn(
                    f"{self.path}: matrix is stored column-major (CSC); loading it whole into "
                    "memory. Rewrite it as CSR to stream it in chunks.",
                    StformerWarning,
                    stacklevel=3,
                )
                self._matrix = self._matrix.to_memory().tocsr()
        else:
            self._matrix = elem
        self.n_obs = int(self._matrix.shape[0])
        var = read_elem(f[var_key])
        if gene_id_column is None:
            ids = var.index.to_numpy()
        elif gene_id_column in var.columns:
            ids = var[gene_id_column].to_numpy()
        else:
            msg = (
                f"{self.path}: var column {gene_id_column!r} not found; available: "
                f"{list(var.columns)} (leave gene_id_column unset to use var_names)"
            )
            raise InputKeyError(msg)
        self.raw_gene_ids = np.asarray(ids).astype(str)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        if self._csr_group is None:
            return _to_csr(self._matrix[start:stop])
        group = self._csr_group
        indptr = group["indptr"][start : stop + 1].astype(np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        data = group["data"][lo:hi].astype(np.float64)
        indices = group["indices"][lo:hi]
        return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, len(self.raw_gene_ids)))

    def obs_column(self, name: str) -> np.ndarray | None:
        obs = self._file["obs"]
        if name not in obs:
            return None
        values = read_elem(obs[name])
        return np.asarray(values.astype(object) if hasattr(values, "categories") else values)

    def obs_names(self) -> np.ndarray:
        obs = self._file["obs"]
        return np.asarray(read_elem(obs[obs.attrs["_index"]])).astype(str)

    def obsm(self, key: str) -> np.ndarray | None:
        if f"obsm/{key}" not in self._file:
            return None
        return np.asarray(read_elem(self._file[f"obsm/{key}"]))

    def obsp(self, key: str) -> sp.csr_matrix | None:
        if f"obsp/{key}" not in self._file:
            return None
        return sp.csr_matrix(read_elem(self._file[f"obsp/{key}"]))

    def close(self) -> None:
        self._file.close()


class LoomSource(CountSource):
    """A ``.loom`` file (genes x cells on disk) read through loompy."""

    GENE_ATTRS = ("ensembl_id", "Accession", "Gene")

    def __init__(self, path: Path, *, layer: str | None = None, gene_id_column: str | None = None):
        try:
            import loompy
        except ImportError as err:  # pragma: no cover - depends on the installation
            msg = "reading .loom files needs loompy: pip install 'stformer[loom]'"
            raise ImportError(msg) from err
        self.path = Path(path)
        try:
            self._ds = loompy.connect(str(self.path), mode="r", validate=False)
        except OSError as err:
            msg = (
                f"{self.path}: not a readable loom (HDF5) file ({err}); it may be truncated by an "
                "interrupted copy or be another format: copy or write it again"
            )
            raise InputError(msg) from err
        name = "" if layer in (None, "X") else layer
        if name not in self._ds.layers.keys():
            msg = f"{self.path}: layer {layer!r} not found; available: {list(self._ds.layers.keys())}"
            raise InputKeyError(msg)
        self._layer = self._ds.layers[name]
        self.n_obs = int(self._ds.shape[1])
        attrs = list(self._ds.ra.keys())
        column = gene_id_column or next((a for a in self.GENE_ATTRS if a in attrs), None)
        if column not in attrs:
            msg = (
                f"{self.path}: row attribute {column!r} not found; available: {attrs}; "
                "name the gene identifier attribute with gene_id_column"
            )
            raise InputKeyError(msg)
        self.raw_gene_ids = np.asarray(self._ds.ra[column]).astype(str)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        return _to_csr(self._layer[:, start:stop].T)

    def obs_column(self, name: str) -> np.ndarray | None:
        return np.asarray(self._ds.ca[name]) if name in self._ds.ca.keys() else None

    def obs_names(self) -> np.ndarray:
        names = self.obs_column("CellID")
        return (names if names is not None else np.arange(self.n_obs)).astype(str)

    def obsm(self, key: str) -> np.ndarray | None:
        return self.obs_column(key)

    def obsp(self, key: str) -> sp.csr_matrix | None:
        graphs = self._ds.col_graphs
        return sp.csr_matrix(graphs[key]) if key in graphs.keys() else None

    def close(self) -> None:
        self._ds.close()


def open_source(path: str | Path, *, layer: str | None = None, gene_id_column: str | None = None) -> CountSource:
    """Open an ``.h5ad`` or ``.loom`` file for chunked reading."""
    path = Path(path)
    cls = LoomSource if path.suffix.lower() == ".loom" else H5adSource
    return cls(path, layer=layer, gene_id_column=gene_id_column)
