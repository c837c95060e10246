"""Figures through matplotlib's object API: no pyplot, so a notebook's backend and figures are untouched."""

from __future__ import annotations

from pathlib import Path


def new_figure(width: float, height: float):
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches, apart from pyplot's figure manager."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the installation
        msg = "plots need matplotlib: pip install matplotlib"
        raise ImportError(msg) from err
    return Figure(figsize=(width, height))


def save_figure(figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path
