"""Safe file helpers: restricted unpickling and atomic writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> float | int:
    """Rebuild a numeric NumPy scalar (as found in Geneformer's pickles) as a Python number."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        msg = f"refusing NumPy scalar of dtype {dtype!r}: only numeric scalars are accepted"
        raise pickle.UnpicklingError(msg)
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def _numpy_dtype(name: str, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(name)
    if dtype.kind not in "biuf":
        msg = f"refusing NumPy dtype {name!r}: only numeric dtypes are accepted"
        raise pickle.UnpicklingError(msg)
    return dtype


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, tuples, strings, numbers and numeric NumPy scalars."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            msg = (
                f"refusing to load {module}.{name}: this pickle would import code. Only plain "
                "dicts, lists, strings, ints and floats are accepted; convert the file to JSON."
            )
            raise pickle.UnpicklingError(msg)
        return allowed


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle holding only plain data; refuse anything that would import or run code.

    Examples
    --------
    >>> safe_load_pickle("token_dictionary.pkl")  # doctest: +SKIP
    {'<pad>': 0, '<mask>': 1, 'ENSG00000000003': 2}

    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        msg = f"{path}: {err}"
        raise InputError(msg) from err


def load_mapping_file(path: str | Path) -> Any:
    """Load a JSON file, or a pickle through :func:`safe_load_pickle`, chosen by the extension."""
    path = Path(path)
    if not path.exists():
        msg = f"{path}: file not found"
        raise FileNotFoundError(msg)
    if path.suffix.lower() in {".pkl", ".pickle"}:
        return safe_load_pickle(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        msg = f"{path}: not valid JSON ({err}); pickles need a .pkl or .pickle extension"
        raise InputError(msg) from err


def refuse_existing(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a Path; an error if it exists and ``overwrite`` is false (nothing already written is replaced)."""
    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path} already exists; choose another output path or pass overwrite=True (--overwrite)"
        raise FileExistsError(msg)
    return path


@contextlib.contextmanager
def atomic_path(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only when the block succeeds.

    An existing ``final`` is an error unless ``overwrite``; on failure nothing is left behind.
    """
    final = refuse_existing(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.exists():
            old = tmp / "replaced"
            os.replace(final, old)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))
    return Path(path)


def write_pickle(obj: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write plain data ``obj`` as a pickle atomically (for files the specification names .pkl)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(pickle.dumps(obj, protocol=4))
    return Path(path)


def write_mapping(obj: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a mapping as pickle when ``path`` ends in .pkl/.pickle, as JSON otherwise."""
    if Path(path).suffix.lower() in {".pkl", ".pickle"}:
        return write_pickle(obj, path, overwrite=overwrite)
    return write_json(obj, path, overwrite=overwrite)


def file_identity(path: str | Path | None) -> list | None:
    """A file or folder by path and each file's size and modification time (a changed file is another input).

    Folders list their own files (not sub-folders); None stays None.
    """
    if path is None:
        return None
    path = Path(path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [str(path.resolve()), [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]]
