import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_adata  # noqa: E402

from stformer.demo import pbmc68k_counts  # noqa: E402


@pytest.fixture(scope="session")
def pbmc_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("pbmc") / "pbmc.h5ad"
    pbmc68k_counts().write_h5ad(path)
    return path


@pytest.fixture
def tissue(tmp_path):
    """Two-sample synthetic tissue written as h5ad; returns (adata, path)."""
    adata = make_adata(240, 150, expressed=40, n_samples=2, seed=3)
    path = tmp_path / "tissue.h5ad"
    adata.write_h5ad(path)
    return adata, path
