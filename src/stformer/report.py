"""The report of ``stformer run``: metrics, plots and a Markdown summary with a baseline."""

from __future__ import annotations

import json
import platform
import shutil
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from datasets import load_from_disk

from ._constants import (
    CELL_ID,
    CONFUSION_SUFFIX,
    EVAL_METRICS_FILE,
    GENES_TABLE,
    LABEL,
    LOG_HISTORY_FILE,
    PERTURB_FIGURE,
    PREDICTIONS_FILE,
    SCREEN_SETTINGS,
    STAGES,
    STAMPS_DIR,
)
from ._datasets import string_column
from ._errors import InputKeyError
from ._figures import new_figure, save_figure
from ._files import safe_load_pickle, write_json
from ._report_arms import arms_section
from ._report_network import network_lines
from ._sampling import stratified_subsample
from .embedding import read_embeddings
from .tokenize import forget_input_files, read_coordinates, read_expression, read_neighbor_expression
from .vocab import load_token_dictionary

PACKAGES = ("stformer", "torch", "transformers", "datasets", "anndata", "numpy", "scikit-learn")


BASELINE_MAX_TRAIN = 50_000  # training cells of the logistic-regression baseline (stratified subsample)
SPATIAL_BASELINE_MAX_TRAIN = 10_000  # the same with neighbor-averaged expression (rows ~6x denser)
BASELINE_CHUNK = 10_000  # held-out cells read and predicted at once
NEIGHBOR_READ = 2_500  # cells whose neighbors are read at once
MAP_MAX_CELLS = 50_000  # cells drawn in the embedding map (stratified subsample)


def logistic_baseline(
    features: Callable[[np.ndarray], sp.spmatrix],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    max_train: int = BASELINE_MAX_TRAIN,
) -> dict:
    """Macro-F1 of logistic regression on ``features(cell ids)``, trained and tested on the given cells.

    ``train`` and ``test`` are ``(cell ids, labels)``; ``features`` reads a matrix (cells, features)
    for cell ids, such as :func:`~stformer.tokenize.read_expression`. At most ``max_train``
    training cells are used (a stratified subsample); held-out cells are predicted in chunks.
    Returns ``{"macro_f1", "accuracy", "n_train", "n_train_available", "n_test", "predicted"}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    train_ids, train_labels = train
    chosen = stratified_subsample(np.asarray(train_labels), max_train)
    model = LogisticRegression(max_iter=2000).fit(
        features(np.asarray(train_ids[chosen])), np.asarray(train_labels)[chosen]
    )
    test_ids, test_labels = np.asarray(test[0]), np.asarray(test[1])
    predicted = np.concatenate(
        [model.predict(features(test_ids[lo : lo + BASELINE_CHUNK])) for lo in range(0, len(test_ids), BASELINE_CHUNK)]
    )
    return {
        "macro_f1": float(f1_score(test_labels, predicted, average="macro")),
        "accuracy": float((predicted == test_labels).mean()),
        "n_train": len(chosen),
        "n_train_available": len(train_ids),
        "n_test": len(test_ids),
        "predicted": predicted,
    }


def _spatial_section(config, evaluation, report: Path, train, test, vocab, predicted, id_class) -> tuple[list, dict]:
    """With coordinates in every file: the spatial baseline, per-group scores and ``tissue.png``.

    The spatial baseline is the expression baseline with each cell's neighbor-averaged expression
    appended (the tokenizer's neighbors). Groups are the held-out ``split_column`` groups, else files.
    """
    from sklearn.metrics import f1_score

    try:
        coords = read_coordinates(config.data, config.input, test[0], config.tokenize.spatial_key)
    except InputKeyError:
        return [], {}
    settings = config.tokenize_settings()

    def with_neighbors(ids: np.ndarray) -> sp.csr_matrix:  # read in parts: the neighbors' rows are many
        parts = [ids[lo : lo + NEIGHBOR_READ] for lo in range(0, len(ids), NEIGHBOR_READ)]
        return sp.vstack(
            [
                sp.hstack(
                    [
                        read_expression(config.data, config.input, vocab, part),
                        read_neighbor_expression(config.data, settings, vocab, part),
                    ]
                )
                for part in parts
            ],
            format="csr",
        )

    spatial = logistic_baseline(with_neighbors, train, test, max_train=SPATIAL_BASELINE_MAX_TRAIN)
    split_column = config.classify.split_column
    groups = (
        np.asarray(evaluation[split_column]).astype(str)
        if split_column
        else np.array([c.split(":", 1)[0] for c in test[0]])
    )
    truth = np.asarray(test[1])
    scores = {
        str(g): {
            "n_cells": int((groups == g).sum()),
            "macro_f1": float(f1_score(truth[groups == g], predicted[groups == g], average="macro")),
            "accuracy": float((truth[groups == g] == predicted[groups == g]).mean()),
        }
        for g in np.unique(groups)
    }
    _tissue_plot(coords, truth, predicted, groups, id_class, report / "tissue.png")
    subsample = (
        f", a stratified subsample of {spatial['n_train']:,} of the {spatial['n_train_available']:,} training cells"
        if spatial["n_train"] < spatial["n_train_available"]
        else ""
    )
    lines = [
        f"| logistic regression on expression + neighbor-averaged expression ({settings.n_neighbors} neighbors"
        f"{subsample}) | {spatial['macro_f1']:.3f} | {spatial['accuracy']:.3f} |",
        "",
        "Per held-out group (stformer): "
        + "; ".join(f"`{g}` macro-F1 {v['macro_f1']:.3f}, accuracy {v['accuracy']:.3f}" for g, v in scores.items())
        + ". `tissue.png`: each held-out group at its coordinates, true labels beside predicted.",
    ]
    return lines, {
        "spatial_logistic_regression": {k: v for k, v in spatial.items() if k != "predicted"},
        "per_group": scores,
    }


def _tissue_plot(coords, truth, predicted, groups, id_class: dict, path: Path) -> None:
    """Each group's cells at their coordinates (image axes: y down): true classes left, predicted right."""
    from matplotlib import colormaps

    names = sorted(set(truth) | set(predicted))
    palette = colormaps["tab10"].colors
    colours = {c: palette[i % len(palette)] for i, c in enumerate(names)}
    unique = np.unique(groups)
    fig = new_figure(9, 4.2 * len(unique))
    axes = np.atleast_2d(fig.subplots(len(unique), 2))
    for row, group in zip(axes, unique, strict=True):
        members = groups == group
        for ax, values, title in ((row[0], truth, "true"), (row[1], predicted, "predicted")):
            for c in names:
                chosen = members & (values == c)
                ax.scatter(coords[chosen, 0], coords[chosen, 1], s=4, color=colours[c], label=id_class.get(c, c))
            ax.set_title(f"{group}: {title}", fontsize=9)
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 1].legend(markerscale=3, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save_figure(fig, path)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _embedding_plot(embeddings: np.ndarray, labels: np.ndarray, path: Path) -> str:
    """2-D map of cell embeddings coloured by label: UMAP when umap-learn is installed, else PCA."""
    try:
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "n_jobs overridden by random_state"
            coords, method = umap.UMAP(random_state=0).fit_transform(embeddings), "UMAP"
    except ImportError:
        centred = embeddings - embeddings.mean(0)
        coords, method = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T, "PCA"
    fig = new_figure(7, 6)
    ax = fig.subplots()
    for label in sorted(set(labels)):
        chosen = labels == label
        ax.scatter(coords[chosen, 0], coords[chosen, 1], s=6, label=label)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_title(f"Cell embeddings ({method}), coloured by label")
    ax.legend(markerscale=2, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save_figure(fig, path)
    return method


def _curves(out: Path, path: Path) -> None:
    fig = new_figure(10, 4)
    axes = fig.subplots(1, 2)
    sources = [(out / "pretrain", "pretraining (masked genes)"), (out / "classify", "fine-tuning")]
    for ax, (folder, title) in zip(axes, sources, strict=True):
        logs = sorted(folder.glob(f"**/{LOG_HISTORY_FILE}"))
        history = json.loads(logs[0].read_text()) if logs else []
        for key in ("loss", "eval_loss"):
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=key)
        ax.set_title(title if history else f"{title}: not run (a given model)")
        ax.set_xlabel("step")
        if history:
            ax.legend()
    save_figure(fig, path)


def describe_split(labeled, evaluation, label_column: str, split_column: str | None) -> str:
    """How the held-out cells were chosen, in words for the summary."""
    if split_column is None:
        return f"{len(evaluation)} held out, stratified by `{label_column}`"
    held = sorted(set(map(str, evaluation[split_column])))
    every = set(map(str, labeled[split_column]))
    shown = ", ".join(held[:10]) + (", ..." if len(held) > 10 else "")
    return (
        f"{len(evaluation)} held out: every cell of {len(held)} of the {len(every)} `{split_column}` groups "
        f"({shown}); the other {len(every) - len(held)} groups trained on"
    )


def _perturbation_lines(config, paths: dict, report: Path, top: int = 10) -> list[str]:
    """The summary's perturbation section (its figure copied beside it); nothing without a screen."""
    import pandas as pd

    settings, screen = config.perturb, paths["perturb"]
    if settings is None or not (screen / f"{GENES_TABLE}.csv").exists():
        return []
    genes = pd.read_csv(screen / f"{GENES_TABLE}.csv")
    shutil.copy(screen / PERTURB_FIGURE, report / PERTURB_FIGURE)
    recorded = json.loads((screen / SCREEN_SETTINGS).read_text())
    cells, separation = recorded["cells"], recorded.get("state_separation")
    goal = f", toward `{settings.goal_state}`" if settings.goal_state is not None else ""
    start = f" `{settings.start_state}`" if settings.start_state is not None else ""
    measure = "goal shift" if settings.goal_state is not None else "1 - cosine similarity"
    classifier = f"the cell classifier fine-tuned on `{config.label_column}`"
    space = f"Screened in {classifier if config.screens_in_classifier() else 'the pretrained model'}"
    if separation is not None:
        space += (
            f"; its embeddings tell the screened cells from `{settings.goal_state}` cells with a nearest-centroid "
            f"balanced accuracy of {separation:.2f} (cross-validated; chance 0.5)"
        )
    rows = genes.head(top)
    return [
        f"## In silico {settings.perturbation}",
        "",
        f"{space}.",
        "",
        f"{len(genes)} genes perturbed in {cells}{start} cells{goal}; {int((genes['fdr'] < 0.05).sum())} with "
        f"FDR < 0.05. Effect: the gene's mean {measure} minus that of rank-matched random genes of the same "
        "cells, with a 95% interval from resampling cells; tested against the spread of random genes' effects "
        "(stformer.perturbation.statistics), Benjamini-Hochberg FDR. "
        f"Top {len(rows)} (all in `perturb/genes.csv`; plot `perturbation.png`):",
        "",
        "| gene | cells | effect | 95% interval | FDR |",
        "|---|---|---|---|---|",
        *[
            f"| {r.symbol} | {r.n_cells} | {r.effect:.3g} | {r.effect_ci_low:.3g} to {r.effect_ci_high:.3g} "
            f"| {r.fdr:.2g} |"
            for r in rows.itertuples()
        ],
        "",
    ]


def write_report(config, out: Path, paths: dict) -> Path:
    """Write ``out/report``: metrics.json, confusion_matrix.png, umap.png, training_curves.png, summary.md.

    ``paths`` names the stages' outputs: ``labeled`` (the classifier's labeled dataset), ``eval``
    (its held-out part), ``vocab``, ``embed``, ``tokenize``, ``classify`` (its folder), ``perturb``
    (the screen's folder, read when the run has a perturb section), ``network`` (likewise).
    """
    report = out / "report"
    report.mkdir(exist_ok=True)
    metrics = json.loads((paths["classify"] / EVAL_METRICS_FILE).read_text())
    evaluation = load_from_disk(str(paths["eval"]))
    labeled = load_from_disk(str(paths["labeled"]))
    cells = string_column(labeled, CELL_ID)  # (labeled,) Arrow-backed: a million ids hold no Python strings
    evaluated = string_column(evaluation, CELL_ID)  # (held out,) in the evaluation's order
    held_out = cells.isin(evaluated)
    labels = labeled.with_format("arrow")[LABEL].to_numpy()
    vocab = load_token_dictionary(paths["vocab"])
    train, test = (cells[~held_out], labels[~held_out]), (np.asarray(cells[held_out]), labels[held_out])
    expression = lambda ids: read_expression(config.data, config.input, vocab, ids)  # noqa: E731
    baseline = logistic_baseline(expression, train, test)
    arm_rows, arm_lines, arms = arms_section(
        paths["classify"], baseline, lambda ids, y: logistic_baseline(expression, (ids, y), test), report
    )
    split = describe_split(labeled, evaluation, config.label_column, config.classify.split_column)
    predictions = safe_load_pickle(paths["classify"] / PREDICTIONS_FILE)
    order = pd.Index(evaluated).get_indexer(test[0])  # eval order -> labeled order
    predicted = np.asarray(predictions["predictions"])[order]
    spatial_lines, spatial = _spatial_section(
        config, evaluation, report, train, test, vocab, predicted, predictions["id_class_dict"]
    )
    forget_input_files()  # the input files are read; the embedding map needs the memory
    write_json(
        {
            **metrics,
            "logistic_regression_macro_f1": baseline["macro_f1"],
            "logistic_regression": {k: v for k, v in baseline.items() if k != "predicted"},
            **spatial,
            **arms,
            "split": split,
        },
        report / "metrics.json",
        overwrite=True,
    )
    shutil.copy(paths["classify"] / f"eval{CONFUSION_SUFFIX}", report / "confusion_matrix.png")
    embedded = read_embeddings(paths["embed"])["cells"]  # (all cells, hidden), memory-mapped
    column = load_from_disk(str(paths["tokenize"])).with_format("arrow")[config.label_column]
    encoded = pc.dictionary_encode(pc.fill_null(column.cast(pa.string()), "None")).combine_chunks()
    codes, classes = encoded.indices.to_numpy(), np.asarray(encoded.dictionary.to_pylist())  # (cells,), (classes,)
    drawn = stratified_subsample(codes, MAP_MAX_CELLS)
    method = _embedding_plot(np.asarray(embedded[drawn]), classes[codes[drawn]], report / "umap.png")
    drawn_note = f"; {len(drawn):,} of the {len(codes):,} cells, stratified" if len(drawn) < len(codes) else ""
    _curves(out, report / "training_curves.png")
    stamps = {p.stem: json.loads(p.read_text())["seconds"] for p in (out / STAMPS_DIR).glob("*.json")}
    seconds = {stage: stamps[stage] for stage in STAGES if stage in stamps}
    subsample = (
        f" (a stratified subsample of {baseline['n_train']:,} of the {baseline['n_train_available']:,} training cells)"
        if baseline["n_train"] < baseline["n_train_available"]
        else ""
    )
    lines = [
        "# stformer run",
        "",
        f"Inputs: {', '.join(config.data)}; label `{config.label_column}`; {len(labeled)} labeled cells, {split}.",
        "",
        "| model | macro-F1 | accuracy |",
        "|---|---|---|",
        f"| stformer (fine-tuned) | {metrics['macro_f1']:.3f} | {metrics['accuracy']:.3f} |",
        f"| logistic regression on log1p(CP10k), same split{subsample} | {baseline['macro_f1']:.3f} | "
        f"{baseline['accuracy']:.3f} |",
        *arm_rows,
        *spatial_lines,
        *arm_lines,
        "",
        f"Plots: `confusion_matrix.png`, `umap.png` ({method} of the cell embeddings{drawn_note}), "
        "`training_curves.png`.",
        "",
        *_perturbation_lines(config, paths, report),
        *network_lines(config, paths["network"], report),
        "| stage | seconds (last run) |",
        "|---|---|",
        *[f"| {stage} | {s} |" for stage, s in seconds.items()],
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
        "",
    ]
    path = report / "summary.md"
    path.write_text("\n".join(lines))
    return path
