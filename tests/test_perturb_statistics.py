"""The screen's statistics: calibrated when no gene is special, powerful for a planted driver, the cell as the unit."""

import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import kstest
from synthetic import planted_state_adata

from stformer import perturb
from stformer._warnings import StformerWarning
from stformer.classify import GenericClassifier
from stformer.perturbation.statistics import gene_statistics, leave_one_out_medians
from stformer.pipeline import load_run_config, run_pipeline
from stformer.settings import ClassifyConfig


def test_leave_one_out_medians_equal_the_median_of_the_others():
    rng = np.random.default_rng(0)
    groups, values = rng.integers(0, 30, 300), rng.normal(size=300)
    expected = [
        np.median(values[(groups == groups[i]) & (np.arange(300) != i)]) if (groups == groups[i]).sum() > 1 else np.nan
        for i in range(300)
    ]
    np.testing.assert_allclose(leave_one_out_medians(groups, values), expected)


def _screen_table(seed: int, n_genes: int = 60, n_cells: int = 80, draws: int = 5, planted: float = 0.0):
    """A genome-wide screen's per-cell table: effect = gene's own + cell's + noise, each gene drawn for its neighbours.

    Genes differ (fixed effects, sd 0.5) as a model's genes do; cells differ more (sd 2). With
    ``planted``, gene G0 adds that much in every cell.
    """
    rng = np.random.default_rng(seed)
    own = rng.normal(0, 0.5, n_genes) + np.r_[planted, np.zeros(n_genes - 1)]
    rows = []
    for c in range(n_cells):
        genes = rng.permutation(n_genes)[: n_genes * 3 // 4]  # this cell's expressed genes, in rank order
        values = own[genes] + rng.normal(0, 2) + rng.normal(0, 1, len(genes))
        for i, g in enumerate(genes):
            rows.append((f"c{c}", f"G{g}", i + 1, False, "", values[i]))
            nearest = np.argsort(np.abs(np.arange(len(genes)) - i))[1 : 2 * draws + 1]
            for j in rng.choice(nearest, draws, replace=False):
                rows.append((f"c{c}", f"G{genes[j]}", j + 1, True, f"G{g}", values[j]))
    table = pd.DataFrame(rows, columns=["cell_id", "gene", "rank", "null", "null_for", "goal_shift"])
    table = table.assign(applied=True, cosine_similarity=0.99)
    table.attrs["G0_over_others"] = own[0] - own[1:].mean()  # G0's expected effect over its draws' median
    return table


def test_p_values_are_uniform_when_no_gene_is_special_and_a_planted_driver_is_found():
    called = []
    for seed in range(5):
        genes = gene_statistics(_screen_table(seed), "goal")
        assert genes.attrs["random_genes"]["from"] == "screened genes"
        assert kstest(genes["p_value"], "uniform").pvalue > 0.01
        called.append((genes["fdr"] < 0.05).mean())
        table = _screen_table(seed, planted=3.0)
        planted = gene_statistics(table, "goal")
        assert planted["gene"].iloc[0] == "G0" and planted["fdr"].iloc[0] < 0.05
        assert planted["effect"].iloc[0] == pytest.approx(table.attrs["G0_over_others"], abs=0.5)
    assert np.mean(called) <= 0.05


def test_more_draws_per_cell_do_not_make_a_gene_more_significant():
    # the cell is the unit: ten draws per cell instead of three leave the evidence where it was
    few, many = (gene_statistics(_screen_table(7, draws=d, planted=1.0), "goal") for d in (3, 10))
    p_few, p_many = (g.set_index("gene").loc["G0", "p_value"] for g in (few, many))
    assert p_many > p_few / 10


def _planted_run(root, **world):
    """``stformer run`` on a world where one gene alone tells A from B: classify on the state, screen A toward B."""
    planted_state_adata(**world).write_h5ad(root / "cells.h5ad")
    config = {
        "data": ["cells.h5ad"],
        "output_dir": "run",
        "label_column": "state",
        "medians": {"method": "exact"},
        "tokenize": {"metadata_columns": [f"shuffled_{k}" for k in range(1, world.get("shuffles", 1) + 1)]},
        "pretrain": {
            "num_layers": 2,
            "hidden_size": 32,
            "num_heads": 2,
            "intermediate_size": 64,
            "epochs": 3,
            "batch_size": 16,
            "learning_rate": 0.001,
        },
        "classify": {
            "training_args": {"num_train_epochs": 5, "learning_rate": 0.001, "per_device_train_batch_size": 16}
        },
        "perturb": {"start_state": "A", "goal_state": "B", "max_cells": 250},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    run_pipeline(load_run_config(root / "run.yaml"), progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """The world the statistics were developed on (seed 1), with three shuffled labellings."""
    return _planted_run(tmp_path_factory.mktemp("planted"), seed=1, shuffles=3)


@pytest.mark.slow
def test_stformer_run_screens_in_the_state_classifier_and_finds_the_planted_gene(planted_run):
    genes = pd.read_csv(planted_run / "perturb" / "genes.csv")
    assert genes["gene"].iloc[0] == "ENSG00000000000" and genes["fdr"].iloc[0] < 0.05
    assert (genes["fdr"].iloc[1:] > 0.05).mean() > 0.9
    recorded = json.loads((planted_run / "perturb" / "settings.json").read_text())
    assert recorded["state_separation"] > 0.9  # the classifier's space tells A from B
    summary = (planted_run / "report" / "summary.md").read_text()
    assert "Screened in the cell classifier fine-tuned on `state`" in summary
    assert "nearest-centroid balanced accuracy of" in summary and "95% interval" in summary


@pytest.mark.slow
def test_a_held_out_world_finds_its_planted_gene(tmp_path):
    # not used while choosing the test: another seed, more genes, another planted gene
    run = _planted_run(tmp_path, n_genes=70, planted=23, seed=11)
    genes = pd.read_csv(run / "perturb" / "genes.csv")
    assert genes["gene"].iloc[0] == "ENSG00000000023" and genes["fdr"].iloc[0] < 0.05
    assert (genes["fdr"].iloc[1:] > 0.05).mean() > 0.9


@pytest.mark.slow
def test_classifiers_of_shuffled_labels_give_uniform_p_values(planted_run, tmp_path):
    called = []
    for k in (1, 2, 3):
        label = f"shuffled_{k}"
        settings = ClassifyConfig(
            metadata_column=label,
            training_args={"num_train_epochs": 5, "learning_rate": 0.001, "per_device_train_batch_size": 16},
        )
        classifier = GenericClassifier.from_config(settings)
        data, labels = classifier.prepare_data(str(planted_run / "tokens"), str(tmp_path / label), "cells")
        classifier.train(
            str(planted_run / "pretrain" / "pretrain" / "model"), data, str(tmp_path / label), id_class_dict_file=labels
        )
        with warnings.catch_warnings():  # the space barely separates the states: warned, and the reason for the test
            warnings.simplefilter("ignore", StformerWarning)
            genes = perturb(
                tmp_path / label / "model",
                planted_run / "tokens",
                tmp_path / f"screen_{k}",
                state_column="state",
                start_state="A",
                goal_state="B",
                max_cells=250,
                progress=False,
            )
        assert kstest(genes["p_value"].dropna(), "uniform").pvalue > 0.01
        called.append((genes["fdr"] < 0.05).mean())
    assert np.mean(called) <= 0.05


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
