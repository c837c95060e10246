"""The report of ``stformer run``: metrics, plots and a Markdown summary with a baseline."""

from __future__ import annotations

import json
import platform
import shutil
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ._files import write_json

PACKAGES = ("stformer", "torch", "transformers", "datasets", "anndata", "numpy", "scikit-learn")


def logistic_baseline(data: list[str], label_column: str, train_ids: list[str], test_ids: list[str]) -> float:
    """Macro-F1 of logistic regression on log1p(CP10k) expression of the same train/test cells."""
    import anndata as ad
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from .tokenize._sources import find_data_files

    files = find_data_files(data)
    parts = [ad.read_loom(f) if f.suffix == ".loom" else ad.read_h5ad(f) for f in files]
    adata = parts[0] if len(parts) == 1 else ad.concat(parts, join="inner")
    index = {c: i for i, c in enumerate(adata.obs_names.astype(str))}
    train = [index[c] for c in train_ids if c in index]
    test = [index[c] for c in test_ids if c in index]
    x = adata.X[train + test]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    labels = adata.obs[label_column].astype(str).to_numpy()[train + test]
    model = LogisticRegression(max_iter=2000).fit(x[: len(train)], labels[: len(train)])
    return float(f1_score(labels[len(train) :], model.predict(x[len(train) :]), average="macro"))


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
    from .classify.plots import _pyplot

    try:
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "n_jobs overridden by random_state"
            coords, method = umap.UMAP(random_state=0).fit_transform(embeddings), "UMAP"
    except ImportError:
        centred = embeddings - embeddings.mean(0)
        coords, method = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T, "PCA"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for label in sorted(set(labels)):
        chosen = labels == label
        ax.scatter(coords[chosen, 0], coords[chosen, 1], s=6, label=label)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_title(f"Cell embeddings ({method}), coloured by label")
    ax.legend(markerscale=2, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return method


def _curves(out: Path, path: Path) -> None:
    from .classify.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sources = [(out / "pretrain", "pretraining (masked genes)"), (out / "classify", "fine-tuning")]
    for ax, (folder, title) in zip(axes, sources, strict=True):
        logs = sorted(folder.glob("**/log_history.json"))
        history = json.loads(logs[0].read_text()) if logs else []
        for key in ("loss", "eval_loss"):
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_report(config, out: Path, paths: dict) -> Path:
    """Write ``out/report``: metrics.json, confusion_matrix.png, umap.png, training_curves.png, summary.md."""
    from datasets import load_from_disk

    report = out / "report"
    report.mkdir(exist_ok=True)
    metrics = json.loads((out / "classify" / "eval_metrics.json").read_text())
    evaluation = load_from_disk(str(out / "classify" / "eval.dataset"))
    labeled = load_from_disk(str(out / "classify" / "cells_labeled.dataset"))
    test_ids = list(evaluation["cell_id"])
    held_out = set(test_ids)
    train_ids = [c for c in labeled["cell_id"] if c not in held_out]
    baseline = logistic_baseline(config.data, config.label_column, train_ids, test_ids)
    write_json({**metrics, "logistic_regression_macro_f1": baseline}, report / "metrics.json", overwrite=True)
    shutil.copy(out / "classify" / "eval_confusion_matrix.png", report / "confusion_matrix.png")
    embeddings = np.load(paths["embed"])
    tokens = load_from_disk(str(paths["tokenize"]))
    method = _embedding_plot(
        embeddings["cells"], np.asarray(tokens[config.label_column]).astype(str), report / "umap.png"
    )
    _curves(out, report / "training_curves.png")
    from .pipeline import STAGES

    stamps = {p.stem: json.loads(p.read_text())["seconds"] for p in (out / ".stages").glob("*.json")}
    seconds = {stage: stamps[stage] for stage in STAGES if stage in stamps}
    lines = [
        "# stformer run",
        "",
        f"Inputs: {', '.join(config.data)}; label `{config.label_column}`; {len(labeled)} labeled cells, "
        f"{len(test_ids)} held out (stratified).",
        "",
        "| model | macro-F1 | accuracy |",
        "|---|---|---|",
        f"| stformer (fine-tuned) | {metrics['macro_f1']:.3f} | {metrics['accuracy']:.3f} |",
        f"| logistic regression on log1p(CP10k), same split | {baseline:.3f} | |",
        "",
        f"Plots: `confusion_matrix.png`, `umap.png` ({method} of the cell embeddings), `training_curves.png`.",
        "",
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
