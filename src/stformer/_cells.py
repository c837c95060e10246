"""Cell identities that are unique across input files: ``<file stem>:<obs name>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._errors import InputError


def file_key(path: str | Path) -> str:
    """The part of a cell id that names its file: the file name without its extension."""
    return Path(path).stem


def check_file_keys(paths: Sequence[Path]) -> None:
    """Fail when two input files share a name (their cells' ids would collide)."""
    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(file_key(path), path)
        if other != path:
            msg = (
                f"{path} and {other}: two input files named {file_key(path)!r}; cell ids are made "
                "of the file name and the obs name, so rename one of them"
            )
            raise InputError(msg)


def cell_ids(path: str | Path, obs_names: Sequence[str]) -> np.ndarray:
    """Ids (cells,) ``"<file stem>:<obs name>"`` of a file's cells, unique within and across files.

    An obs name that repeats within the file gets ``-1``, ``-2``, ... on its later occurrences
    (as ``AnnData.obs_names_make_unique`` does), so the same file always gives the same ids.

    >>> cell_ids("slide1.h5ad", ["AAAC-1", "AAAG-1", "AAAC-1"]).tolist()
    ['slide1:AAAC-1', 'slide1:AAAG-1', 'slide1:AAAC-1-1']
    """
    names = pd.Series(np.asarray(obs_names, dtype=str), dtype=object)
    repeat = names.groupby(names).cumcount()
    suffix = ("-" + repeat.astype(str)).where(repeat > 0, "")
    return (file_key(path) + ":" + names + suffix).to_numpy().astype(str)


def repeated_obs_names(obs_names: Sequence[str]) -> int:
    """How many obs names repeat an earlier one."""
    return int(pd.Series(np.asarray(obs_names, dtype=str)).duplicated().sum())
