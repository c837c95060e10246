"""The README's Python examples run as written (on tiny synthetic slides), so the docs cannot rot."""

import re
import warnings
from pathlib import Path

import anndata as ad
import pytest
from synthetic import make_adata

from stformer._warnings import StformerWarning

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch):
    for i, name in enumerate(["slide1.h5ad", "slide2.h5ad"]):
        adata = make_adata(60, 40, expressed=12, n_samples=2, seed=i)
        adata.obs["slide"] = [f"{name}:{s}" for s in adata.obs["sample"]]
        adata.obs_names = [f"{name}-{c}" for c in adata.obs_names]
        adata.write_h5ad(tmp_path / name)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", "the model's embeddings barely", StformerWarning)  # random synthetic labels
    exec(compile("\n".join(blocks), "README.md", "exec"), {})  # noqa: S102 - our own documentation
    assert (tmp_path / "runs" / "pbmc" / "model" / "model.safetensors").exists()
    assert (tmp_path / "cls" / "eval_metrics.json").exists()
    assert ad.read_h5ad(tmp_path / "slide1_stformer.h5ad").obsm["X_stformer"].shape == (60, 256)
