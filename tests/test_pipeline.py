import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from datasets import load_from_disk
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from synthetic import make_adata
from transformers import AutoConfig

import stformer.pretrain
from stformer import InputOptions
from stformer._warnings import StformerWarning
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


@pytest.mark.slow
def test_run_end_to_end_and_resume_one_stage(tmp_path, capsys):
    path = _config(tmp_path, make_adata(120, 50, expressed=20, seed=4))
    config = yaml.safe_load(path.read_text())
    config["perturb"] = {"start_state": "T", "goal_state": "B", "max_cells": 6, "null_draws": 2}  # state: label
    config["network"] = {"states": ["T", "B"], "min_cells": 3, "tested_edges": 50, "permutations": 1000}
    path.write_text(yaml.safe_dump(config))
    with pytest.warns(StformerWarning, match="barely tell the screened cells"):  # random cell types
        assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    summary = (out / "report" / "summary.md").read_text()
    genes = pd.read_csv(out / "perturb" / "genes.csv")
    cells = pd.read_parquet(out / "perturb" / "cells.parquet")
    tokens = load_from_disk(str(out / "tokens"))
    t_cells = {c for c, t in zip(tokens["cell_id"], tokens["cell_type"], strict=True) if t == "T"}
    assert cells["cell_id"].nunique() == 6 and set(cells["cell_id"]) <= t_cells
    assert f"{len(genes)} genes perturbed in 6 `T` cells, toward `B`" in summary
    assert f"| {genes['symbol'].iloc[0]} | {genes['n_cells'].iloc[0]} |" in summary
    assert (out / "report" / "perturbation.png").stat().st_size > 0
    edges = pd.read_csv(out / "network" / "edges.csv")  # from the pretrained model, T against B (label_column)
    both_states = (edges["n_cells_T"] > 0) & (edges["n_cells_B"] > 0)  # the 50 strongest tested where both hold it
    assert (edges["p_value"].notna() == (both_states & (edges.index < 50))).all() and both_states[:50].sum() > 25
    top = edges.iloc[0]
    assert "## Gene network from attention" in summary and f"| {top.source_symbol} | {top.target_symbol} |" in summary
    assert "`T` minus `B`" in summary and (out / "report" / "network.png").stat().st_size > 0
    # coordinates in the input: the spatial baseline, per-file scores (one file: the classifier's own) and the tissue
    report_metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert report_metrics["per_group"]["cells"]["accuracy"] == pytest.approx(report_metrics["accuracy"])
    assert "neighbor-averaged expression (6 neighbors)" in summary and (out / "report" / "tissue.png").exists()
    assert "logistic regression" in summary and "| stformer (fine-tuned) |" in summary
    for name in ("metrics.json", "confusion_matrix.png", "umap.png", "training_curves.png"):
        assert (out / "report" / name).stat().st_size > 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    expected = _independent_baseline(tmp_path, out, ["cells"], layer=None)
    assert metrics["logistic_regression_macro_f1"] == pytest.approx(expected, abs=1e-9)
    evaluation = json.loads((out / "classify" / "eval_metrics.json").read_text())
    assert metrics["macro_f1"] == evaluation["macro_f1"] and f"| {metrics['macro_f1']:.3f} |" in summary
    (out / "report" / "summary.md").unlink()
    log = run_pipeline(load_run_config(path), progress=False)
    assert [s for s, v in log.items() if v != "skipped"] == ["report"]
    assert (out / "report" / "summary.md").exists()
    # a token shard truncated on disk after tokenizing: the stamp's sizes catch it and the stage runs again
    shard = next((out / "tokens").glob("data-*.arrow"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    capsys.readouterr()
    log = run_pipeline(load_run_config(path), stages=("tokenize", "pretrain"), progress=False)
    assert log["tokenize"] != "skipped" and log["pretrain"] == "skipped"
    assert f"tokenize: {shard} (" in capsys.readouterr().out
    assert len(load_from_disk(str(out / "tokens"))) == 120


@pytest.mark.slow
def test_run_reports_the_pretraining_gain_and_label_efficiency(tmp_path):
    path = _config(tmp_path, make_adata(160, 50, expressed=20, seed=5))
    config = yaml.safe_load(path.read_text())
    config["classify"].update(random_init_baseline=True, label_fractions=[0.25, 1.0])
    path.write_text(yaml.safe_dump(config))
    run_pipeline(load_run_config(path), progress=False)
    out, classify = tmp_path / "out", tmp_path / "out" / "classify"
    arms = json.loads((classify / "arms" / "arms_summary.json").read_text())
    assert {(a["initialization"], a["fraction"]) for a in arms} == {
        (i, f) for i in ("pretrained", "random") for f in (0.25, 1.0)
    }
    held = load_from_disk(str(classify / "eval.dataset"))["cell_id"]
    labeled = load_from_disk(str(classify / "cells_labeled.dataset"))
    n_train = len(labeled) - len(held)
    for arm in arms:
        folder = classify / arm["folder"]
        assert load_from_disk(str(folder / "eval.dataset"))["cell_id"] == held  # the same held-out cells
        assert arm["macro_f1"] == json.loads((folder / "eval_metrics.json").read_text())["macro_f1"]
    share = load_from_disk(str(classify / "arms" / "labels-0.25" / "train.dataset"))
    assert not set(share["cell_id"]) & set(held) and abs(len(share) - 0.25 * n_train) <= 3
    assert set(share["label"]) == set(labeled["label"])  # stratified: every class
    start = AutoConfig.from_pretrained(classify / "arms" / "random_initialization")
    assert start.hidden_size == AutoConfig.from_pretrained(out / "pretrain" / "pretrain" / "model").hidden_size
    pretrained_w = safe_open_tensor(out / "pretrain" / "pretrain" / "model", "bert.embeddings.word_embeddings.weight")
    random_w = safe_open_tensor(classify / "arms" / "random_initialization", "bert.embeddings.word_embeddings.weight")
    assert not np.allclose(pretrained_w, random_w)
    summary = (out / "report" / "summary.md").read_text()
    by = {(a["initialization"], a["fraction"]): a["macro_f1"] for a in arms}
    gain = by["pretrained", 1.0] - by["random", 1.0]
    assert f"| {by['random', 1.0]:.3f} |" in summary and f"{gain:+.3f} macro-F1" in summary
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    expected = _independent_baseline(tmp_path, out, ["cells"], None, train_ids=set(share["cell_id"]))
    assert metrics["logistic_regression_by_fraction"]["0.25"] == pytest.approx(expected, abs=1e-9)
    assert (out / "report" / "label_efficiency.png").stat().st_size > 1000


def safe_open_tensor(folder, name):
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))[name]


def test_run_fails_early_on_a_missing_label(tmp_path):
    adata = make_adata(30, 20, expressed=8)
    path = _config(tmp_path, adata)
    config = load_run_config(path)
    config.label_column = "tissue"
    with pytest.raises(KeyError, match="obs column 'tissue' .*label_column"):
        run_pipeline(config, progress=False)
    assert not (tmp_path / "out" / "medians.json").exists()
    config.label_column = "cell_type"
    config.input = InputOptions(gene_mapping={"SOME_SYMBOL": "ENSG1"})
    with pytest.raises(ValueError, match="none of its gene identifiers .* is known to the gene_mapping"):
        run_pipeline(config, progress=False)
    config.input = InputOptions(gene_id_column="symbol")
    with pytest.raises(KeyError, match="var column 'symbol' not found"):
        run_pipeline(config, progress=False)
    config.data = [str(tmp_path / "missing.h5ad")]
    with pytest.raises(FileNotFoundError, match="missing.h5ad: file not found"):
        run_pipeline(config, progress=False)


def _two_slides(tmp_path):
    """Two files that reuse the same barcodes; labels follow the counts layer, X holds noise."""

    rng = np.random.default_rng(0)
    for f, name in enumerate(("a", "b")):
        adata = make_adata(90, 60, expressed=25, seed=10 + f)
        types = np.array(["T", "B", "NK"])[np.arange(90) % 3]
        counts = adata.X.toarray()
        for k, t in enumerate(["T", "B", "NK"]):  # each type expresses its own block of genes strongly
            counts[np.ix_(types == t, np.arange(20 * k, 20 * k + 5))] += 30
        adata.layers["counts"] = sp.csr_matrix(counts)
        adata.X = sp.csr_matrix(rng.poisson(3, counts.shape).astype(np.float32))  # not what the model reads
        adata.obs["cell_type"] = types
        adata.obs["donor"] = [f"{name}{i % 3}" for i in range(90)]
        adata.obs_names = [f"cell{i}" for i in range(90)]  # the same barcodes in both files
        ad.AnnData(adata.X, obs=adata.obs, var=adata.var, layers=adata.layers, obsm=adata.obsm).write_h5ad(
            tmp_path / f"{name}.h5ad"
        )


def _independent_baseline(tmp_path, out, files, layer, train_ids=None):
    """Logistic regression on log1p(CP10k) of ``layer`` (None: X), vocabulary genes, the run's own split.

    ``train_ids``: only these of the training cells (a share of the labels).
    """
    adata = ad.concat({n: ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in files}, label="file", index_unique=":")
    names = zip(adata.obs["file"], adata.obs_names, strict=True)
    adata.obs_names = [f"{f}:{name.rsplit(':', 1)[0]}" for f, name in names]
    counts = (adata.X if layer is None else adata.layers[layer]).toarray()
    vocab = json.loads((out / "vocab.json").read_text())
    genes = [i for i, g in enumerate(adata.var_names) if g in vocab]
    x = np.log1p(counts[:, genes] / counts.sum(1, keepdims=True) * 1e4)
    labeled = load_from_disk(str(out / "classify" / "cells_labeled.dataset"))
    held = set(load_from_disk(str(out / "classify" / "eval.dataset"))["cell_id"])
    row = {c: i for i, c in enumerate(adata.obs_names)}
    train = [
        (row[c], y)
        for c, y in zip(labeled["cell_id"], labeled["label"], strict=True)
        if c not in held and (train_ids is None or c in train_ids)
    ]
    test = [(row[c], y) for c, y in zip(labeled["cell_id"], labeled["label"], strict=True) if c in held]
    model = LogisticRegression(max_iter=2000).fit(x[[r for r, _ in train]], [y for _, y in train])
    return f1_score([y for _, y in test], model.predict(x[[r for r, _ in test]]), average="macro")


@pytest.mark.slow
def test_run_on_two_slides_sharing_barcodes_split_by_donor_and_retrained_when_settings_change(tmp_path, monkeypatch):

    _two_slides(tmp_path)
    path = _config(tmp_path, make_adata(3, 5))
    config = yaml.safe_load(path.read_text())
    config["data"] = ["a.h5ad", "b.h5ad"]
    config["input"] = {"layer": "counts"}
    config["classify"]["split_column"] = "donor"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    summary = (out / "report" / "summary.md").read_text()
    evaluation = load_from_disk(str(out / "classify" / "eval.dataset"))
    held = sorted(set(evaluation["donor"]))
    assert f"every cell of {len(held)} of the 6 `donor` groups ({', '.join(held)})" in summary
    assert "stratified" not in summary
    reported = json.loads((out / "report" / "metrics.json").read_text())["logistic_regression_macro_f1"]
    assert reported == pytest.approx(_independent_baseline(tmp_path, out, ["a", "b"], "counts"), abs=1e-9)

    # New pretraining settings: a new model of the new shape, trained for real steps.
    config["pretrain"]["hidden_size"] = 48
    path.write_text(yaml.safe_dump(config))
    log = run_pipeline(load_run_config(path), progress=False)
    assert log["pretrain"] != "skipped"
    model = out / "pretrain" / "pretrain" / "model"
    assert AutoConfig.from_pretrained(model).hidden_size == 48
    history = json.loads((out / "pretrain" / "pretrain" / "logging" / "summary.json").read_text())
    assert history["global_step"] > 0

    # Another change whose pretraining fails: the finished model stays as it was.
    config["pretrain"]["hidden_size"] = 64
    path.write_text(yaml.safe_dump(config))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stformer.pretrain, "pretrain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(load_run_config(path), stages=("pretrain",), progress=False)
    assert AutoConfig.from_pretrained(model).hidden_size == 48


def test_every_section_is_checked_before_any_stage(tmp_path):
    path = _config(tmp_path, make_adata(30, 20, expressed=8))
    base = yaml.safe_load(path.read_text())
    cases = [
        ("classify", {"test_sizes": 0.3}, "section 'classify': unknown option 'test_sizes' .*did you mean 'test_size'"),
        ("embed", {"layers": -1}, "section 'embed': unknown option 'layers' .*did you mean 'layer'"),
        ("tokenize", {"max_lenght": 5}, "section 'tokenize': unknown option 'max_lenght' .*did you mean 'max_length'"),
        ("pretrain", {"epoch": 1}, "section 'pretrain': unknown option 'epoch' .*did you mean 'epochs'"),
        ("medians", {"layer": "counts"}, "section 'medians': 'layer' belongs to the input section"),
        ("tokenize", {"mode": "bulk"}, "section 'tokenize'.*mode must be one of"),
        (
            "classify",
            {"split_column": "donor"},
            "obs column .donor. .a column the classify section uses. not found",
        ),
        ("classify", {"training_args": {"logging_dir": "x"}}, "'logging_dir' is not an option .*log_history.json"),
        ("perturb", {"perturbation": "knockout"}, "section 'perturb'.*perturbation must be one of"),
        ("perturb", {"filter": {"donor": "d1"}}, "obs column .donor. .a column the perturb section uses. not found"),
    ]
    for section, values, match in cases:
        config = {**base, section: {**base.get(section, {}), **values}}
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(ValueError, match=match):
            run_pipeline(load_run_config(path), progress=False)
        assert not (tmp_path / "out" / "medians.json").exists()
