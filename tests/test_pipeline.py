import json

import pytest
import yaml
from synthetic import make_adata

from stformer.cli import main
from stformer.pipeline import load_run_config, run_pipeline


def _config(tmp_path, adata):
    adata.write_h5ad(tmp_path / "cells.h5ad")
    config = {
        "data": ["cells.h5ad"],
        "output_dir": "out",
        "label_column": "cell_type",
        "medians": {"method": "exact"},
        "tokenize": {"max_length": 64},
        "pretrain": {
            "num_layers": 1,
            "hidden_size": 32,
            "num_heads": 2,
            "intermediate_size": 64,
            "epochs": 1,
            "batch_size": 16,
            "bf16": False,
            "logging_steps": 5,
        },
        "classify": {"training_args": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "disable_tqdm": True}},
        "embed": {"batch_size": 64},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_end_to_end_and_resume_one_stage(tmp_path, capsys):
    path = _config(tmp_path, make_adata(120, 50, expressed=20, seed=4))
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    summary = (out / "report" / "summary.md").read_text()
    assert "logistic regression" in summary and "| stformer (fine-tuned) |" in summary
    for name in ("metrics.json", "confusion_matrix.png", "umap.png", "training_curves.png"):
        assert (out / "report" / name).stat().st_size > 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert 0 <= metrics["logistic_regression_macro_f1"] <= 1 and "macro_f1" in metrics
    (out / "report" / "summary.md").unlink()
    log = run_pipeline(load_run_config(path), progress=False)
    assert [s for s, v in log.items() if v != "skipped"] == ["report"]
    assert (out / "report" / "summary.md").exists()


def test_run_fails_early_on_a_missing_label(tmp_path):
    adata = make_adata(30, 20, expressed=8)
    path = _config(tmp_path, adata)
    config = load_run_config(path)
    config.label_column = "tissue"
    with pytest.raises(KeyError, match="obs column 'tissue' .*label_column"):
        run_pipeline(config, progress=False)
    assert not (tmp_path / "out" / "medians.json").exists()
    config.label_column = "cell_type"
    config.medians = {"gene_mapping": {"SOME_SYMBOL": "ENSG1"}}
    with pytest.raises(ValueError, match="none of its gene identifiers .* is known to the gene_mapping"):
        run_pipeline(config, progress=False)
    config.medians = {"gene_id_column": "symbol"}
    with pytest.raises(KeyError, match="var column 'symbol' not found"):
        run_pipeline(config, progress=False)
    config.data = [str(tmp_path / "missing.h5ad")]
    with pytest.raises(FileNotFoundError, match="missing.h5ad: file not found"):
        run_pipeline(config, progress=False)
