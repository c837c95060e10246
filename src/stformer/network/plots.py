"""``network.png``: the strongest attention edges beside the strongest co-expression pairs, and differential edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._figures import new_figure, save_figure
from ..settings import NetworkConfig
from .statistics import most_significant

DRAWN_EDGES = 40  # edges per panel: readable at a glance


def plot_network(edges: pd.DataFrame, coexpression: pd.DataFrame, config: NetworkConfig, path: Path) -> Path:
    """Draw one panel per network, symbols as labels.

    Attention (arrows, width by weight), co-expression (width by |rho|) and, with states, the most
    significant differential edges (red: stronger in the first state, blue: in the second).
    """
    panels = [("attention: strongest edges", edges.head(DRAWN_EDGES), "weight", True)]
    panels.append(("co-expression (Spearman): strongest pairs", _by_strength(coexpression), "weight", False))
    if config.states:
        panels.append(
            (
                f"differential: {config.states[0]} (red) vs {config.states[1]} (blue)",
                most_significant(edges).head(DRAWN_EDGES),
                "difference",
                True,
            )
        )
    figure = new_figure(6.5 * len(panels), 6.5)
    for k, (title, shown, column, directed) in enumerate(panels, start=1):
        _draw(figure.add_subplot(1, len(panels), k), shown, column, directed, title)
    return save_figure(figure, path)


def _by_strength(table: pd.DataFrame) -> pd.DataFrame:
    return table.iloc[np.argsort(-table["weight"].abs().to_numpy(), kind="stable")[:DRAWN_EDGES]]


def _draw(axis, shown: pd.DataFrame, column: str, directed: bool, title: str) -> None:
    """Draw the edges of ``shown`` on ``axis`` with a spring layout (seeded, so the figure is reproducible)."""
    import networkx as nx

    axis.set_title(title, fontsize=10)
    axis.set_axis_off()
    if shown.empty:
        axis.text(0.5, 0.5, "no edge", ha="center", va="center", transform=axis.transAxes)
        return
    graph = nx.DiGraph() if directed else nx.Graph()
    for row in shown.itertuples(index=False):
        graph.add_edge(row.source_symbol, row.target_symbol, value=float(getattr(row, column)))
    values = np.asarray([d["value"] for _, _, d in graph.edges(data=True)])
    size = np.abs(values) / max(np.abs(values).max(), 1e-12)
    colors = ["tab:red" if v > 0 else "tab:blue" for v in values] if column == "difference" else "0.35"
    layout = nx.spring_layout(graph, seed=0, k=1.5 / np.sqrt(max(graph.number_of_nodes(), 1)))
    nx.draw_networkx_nodes(graph, layout, ax=axis, node_size=250, node_color="#f3d9a4", edgecolors="0.3")
    arrows = {"arrows": True, "arrowsize": 8} if directed else {}
    nx.draw_networkx_edges(
        graph, layout, ax=axis, width=0.5 + 3 * size, edge_color=colors, alpha=0.75, node_size=250, **arrows
    )
    nx.draw_networkx_labels(graph, layout, ax=axis, font_size=7)
