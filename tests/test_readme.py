"""The guide's Python examples run as written, in the order a reader meets them (on tiny synthetic slides)."""

import re
import warnings
from pathlib import Path

import anndata as ad
import pytest
from synthetic import make_adata

from stformer._warnings import StformerWarning

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "guide" / f"{name}.md" for name in ("tokenize", "pretrain", "classify", "embed", "perturb")]


@pytest.mark.slow
def test_the_guide_python_examples_run(tmp_path, monkeypatch):
    for i, name in enumerate(["slide1.h5ad", "slide2.h5ad"]):
        adata = make_adata(60, 40, expressed=12, n_samples=2, seed=i)
        adata.obs["slide"] = [f"{name}:{s}" for s in adata.obs["sample"]]
        adata.obs_names = [f"{name}-{c}" for c in adata.obs_names]
        adata.write_h5ad(tmp_path / name)
    blocks = [block for page in PAGES for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    assert len(blocks) >= 5
    (tmp_path / "readme").mkdir()
    for name in ("slide1.h5ad", "slide2.h5ad"):
        (tmp_path / "readme" / name).symlink_to(tmp_path / name)
    monkeypatch.chdir(tmp_path / "readme")  # the README's short example, on its own
    (readme,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    exec(compile(readme, "README.md", "exec"), {})  # noqa: S102 - our own documentation
    assert (tmp_path / "readme" / "tokens" / "vocab.json").exists()
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", "the model's embeddings barely", StformerWarning)  # random synthetic labels
    exec(compile("\n".join(blocks), "docs", "exec"), {})  # noqa: S102 - our own documentation
    assert (tmp_path / "runs" / "pbmc" / "model" / "model.safetensors").exists()
    assert (tmp_path / "cls" / "eval_metrics.json").exists()
    assert ad.read_h5ad(tmp_path / "slide1_stformer.h5ad").obsm["X_stformer"].shape == (60, 256)
