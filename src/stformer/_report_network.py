"""The run report's gene-network section: the strongest and the differential edges, the overlap with co-expression."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ._constants import EDGES_TABLE, NETWORK_FIGURE, SCREEN_SETTINGS


def network_lines(config, folder: Path, report: Path, top: int = 10) -> list[str]:
    """The summary's network section (its figure copied beside it); nothing when the run has no network."""
    import pandas as pd

    from .network.statistics import discoveries, most_significant

    if config.network is None or not (folder / f"{EDGES_TABLE}.csv").exists():
        return []
    edges = pd.read_csv(folder / f"{EDGES_TABLE}.csv")
    recorded = json.loads((folder / SCREEN_SETTINGS).read_text())
    shutil.copy(folder / NETWORK_FIGURE, report / NETWORK_FIGURE)
    shared = recorded["overlap"]
    lines = [
        "## Gene network from attention",
        "",
        f"{recorded['genes']} genes over {recorded['cells']} cells, the pretrained model's attention (layers "
        f"{recorded['layers']}, heads {recorded['heads']} averaged), each cell's attention times its number of "
        "genes (1 = uniform attention), averaged over the cells holding both genes. The "
        f"{shared['k']} strongest gene pairs share {shared['shared']} with the {shared['k']} strongest Spearman "
        f"co-expression pairs of the same cells ({shared['expected']} expected by chance). "
        f"Strongest {top} edges (all in `network/edges.csv`; co-expression in `network/coexpression_edges.csv`; "
        "plot `network.png`):",
        "",
        "| source | target | weight | cells |",
        "|---|---|---|---|",
        *[
            f"| {r.source_symbol} | {r.target_symbol} | {r.weight:.3g} | {r.n_cells} |"
            for r in edges.head(top).itertuples()
        ],
        "",
    ]
    if "p_value" not in edges:
        return lines
    first, second = config.network.states
    tested = most_significant(edges).head(top)
    return [
        *lines,
        f"Differential, `{first}` minus `{second}`: {discoveries(edges)} (permutations of the cells' states, "
        "Benjamini-Hochberg). Most significant:",
        "",
        f"| source | target | {first} | {second} | difference | p | FDR |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:+.3g} | {r[5]:.2g} | {r[6]:.2g} |"
            for r in tested[
                [
                    "source_symbol",
                    "target_symbol",
                    f"weight_{first}",
                    f"weight_{second}",
                    "difference",
                    "p_value",
                    "fdr",
                ]
            ].itertuples(index=False)
        ],
        "",
    ]
