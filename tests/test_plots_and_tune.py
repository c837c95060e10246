import pickle

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from datasets import load_from_disk
from matplotlib.figure import Figure

from stformer import GenericClassifier, load_token_dictionary, plot_confusion_matrix, plot_predictions


@pytest.fixture
def captured(monkeypatch):
    """Every figure saved, whatever draws it."""
    figures = []
    real_savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()]


def test_confusion_matrix_plot_has_class_names_and_normalized_rows(tmp_path, captured):
    names = ["B cell", "T cell", "NK"]
    counts = {"B cell": {"B cell": 8, "T cell": 2}, "T cell": {"T cell": 5}, "NK": {"NK": 1, "B cell": 3}}
    path = plot_confusion_matrix(counts, str(tmp_path), "run", names)
    assert path.name == "run_confusion_matrix.png" and path.stat().st_size > 1000
    ax = captured[-1].axes[0]
    assert _labels(ax) == (names, names)
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image.sum(1), 1.0)
    np.testing.assert_allclose(image[0], [0.8, 0.2, 0.0])
    with pytest.raises(ValueError, match="does not match 3 classes"):
        plot_confusion_matrix(np.ones((2, 2)), str(tmp_path), "bad", names)


def test_plots_leave_pyplot_alone(tmp_path):
    """A notebook user's backend and open figures survive stformer's plots."""
    backend = matplotlib.get_backend()
    mine = plt.figure()
    try:
        plot_confusion_matrix(np.eye(2), str(tmp_path), "run", ["a", "b"])
        assert matplotlib.get_backend() == backend and plt.fignum_exists(mine.number)
        assert plt.get_fignums() == [mine.number]  # no pyplot figure of stformer's left open
    finally:
        plt.close(mine)


def test_prediction_plot(tmp_path, captured):
    (tmp_path / "pred.pkl").write_bytes(pickle.dumps({"predictions": [0, 1, 1, 0], "label_ids": [0, 1, 0, 0]}))
    (tmp_path / "ids.pkl").write_bytes(pickle.dumps({0: "B", 1: "T"}))
    plot_predictions(str(tmp_path / "pred.pkl"), str(tmp_path / "ids.pkl"), "PBMC", str(tmp_path), "p", ["B", "T"])
    ax = captured[-1].axes[0]
    assert ax.get_title() == "PBMC" and _labels(ax) == (["B", "T"], ["B", "T"])
    np.testing.assert_allclose(ax.get_images()[0].get_array(), [[2 / 3, 1 / 3], [0, 1]])


@pytest.mark.slow
def test_ray_tune_two_trials(pretrained, tmp_path):
    from test_classifier import FAST, _separable_cells

    vocab = load_token_dictionary(pretrained / "vocab.json")
    _separable_cells(len(vocab), n=60).save_to_disk(str(tmp_path / "cells.dataset"))
    clf = GenericClassifier(
        "cell_type",
        training_args={**FAST, "num_train_epochs": 1},
        ray_config={"learning_rate": [1e-3, 3e-3], "weight_decay": (0.0, 0.1)},
        resources_per_trial={"cpu": 2},
    )
    data_path, _ = clf.prepare_data(str(tmp_path / "cells.dataset"), str(tmp_path), "t")
    analysis = clf._ray_tune(str(pretrained), data_path, str(tmp_path), None, 2, 0.2, None)
    assert len(analysis.trials) == 2
    assert all(t.placement_group_factory.required_resources.get("CPU") == 2 for t in analysis.trials)
    assert analysis.get_best_config()["learning_rate"] in (1e-3, 3e-3)
    assert (tmp_path / "best_model" / "model.safetensors").exists()
    assert all("macro_f1" in t.last_result for t in analysis.trials)
    with pytest.raises(ValueError, match="did you mean 'learning_rate'"):
        GenericClassifier("cell_type", ray_config={"lerning_rate": [1e-3]})._ray_tune(
            str(pretrained), data_path, str(tmp_path), None, 1, 0.2, None
        )
    assert len(load_from_disk(data_path)) == 60
