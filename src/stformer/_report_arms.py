"""The report's "does pretraining pay" section: the classify arms beside logistic regression, and their plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasets import load_from_disk

from ._constants import ARMS_DIR, ARMS_SUMMARY, CELL_ID, LABEL
from ._figures import new_figure, save_figure

LABEL_EFFICIENCY_FIGURE = "label_efficiency.png"
NAMES = {"pretrained": "stformer, pretrained", "random": "stformer, random initialization"}


def arms_section(
    classify_dir: Path, baseline: dict, fit_baseline: Callable, report: Path
) -> tuple[list[str], list[str], dict]:
    """Rows for the summary's table, paragraphs after it, and values for metrics.json; nothing without arms.

    ``baseline`` is the logistic regression on every training label; ``fit_baseline(train ids,
    train labels)`` fits it on a share of them (the arm's cells) and returns the same dict.
    """
    summary = classify_dir / ARMS_DIR / ARMS_SUMMARY
    if not summary.exists():
        return [], [], {}
    arms = json.loads(summary.read_text())
    scores = {(a["initialization"], a["fraction"]): a for a in arms}
    fractions = sorted({a["fraction"] for a in arms})
    linear = {1.0: baseline}
    for fraction in fractions[:-1]:
        share = load_from_disk(str(classify_dir / scores["pretrained", fraction]["train_dataset"]))
        linear[fraction] = fit_baseline(np.asarray(share[CELL_ID]), np.asarray(share[LABEL]))
    rows, lines = [], []
    if ("random", 1.0) in scores:
        gain = scores["pretrained", 1.0]["macro_f1"] - scores["random", 1.0]["macro_f1"]
        verdict = "helped" if gain >= 0.01 else "hurt" if gain <= -0.01 else "made no difference"
        rows.append(
            f"| stformer, random initialization (same shape, split, settings and seed) | "
            f"{scores['random', 1.0]['macro_f1']:.3f} | {scores['random', 1.0]['accuracy']:.3f} |"
        )
        lines += [
            "",
            f"**Pretraining {verdict}** on this split: {gain:+.3f} macro-F1 for the pretrained model over the same "
            "model fine-tuned from a random initialization.",
        ]
    if len(fractions) > 1:
        _plot(fractions, scores, linear, report / LABEL_EFFICIENCY_FIGURE)
        initializations = [i for i in NAMES if (i, fractions[0]) in scores]
        lines += [
            "",
            f"With a share of the training labels (stratified, seeded; the same held-out cells), macro-F1 "
            f"(plot `{LABEL_EFFICIENCY_FIGURE}`):",
            "",
            "| labelled cells | " + " | ".join(NAMES[i] for i in initializations) + " | logistic regression |",
            "|---" * (len(initializations) + 2) + "|",
            *[
                f"| {scores['pretrained', f]['n_train']:,} ({f:.0%}) | "
                + " | ".join(f"{scores[i, f]['macro_f1']:.3f}" for i in initializations)
                + f" | {linear[f]['macro_f1']:.3f} |"
                for f in fractions
            ],
        ]
    values = {"arms": arms, "logistic_regression_by_fraction": {str(f): linear[f]["macro_f1"] for f in linear}}
    return rows, lines, values


def _plot(fractions: list[float], scores: dict, linear: dict, path: Path) -> None:
    """Macro-F1 against labelled training cells, one line per model."""
    fig = new_figure(6, 4)
    ax = fig.subplots()
    cells = [scores["pretrained", f]["n_train"] for f in fractions]
    for initialization, name in NAMES.items():
        if (initialization, fractions[0]) in scores:
            ax.plot(cells, [scores[initialization, f]["macro_f1"] for f in fractions], marker="o", label=name)
    ax.plot(cells, [linear[f]["macro_f1"] for f in fractions], marker="s", ls="--", label="logistic regression")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training cells")
    ax.set_ylabel("macro-F1 on the held-out cells")
    ax.set_title("Label efficiency")
    ax.legend(fontsize=8)
    save_figure(fig, path)
