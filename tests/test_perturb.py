import json

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import load_from_disk
from transformers import BertConfig, BertModel

from stformer import PerturbConfig, perturb
from stformer.cli import main
from stformer.perturbation.edits import perturb_sequence
from stformer.perturbation.engine import Perturbation, perturbation_shifts


def test_each_perturbation_edits_the_ranked_genes_as_documented():
    cell = np.array([10, 11, 12, 13, 14, 15, 16, 17])
    assert perturb_sequence(cell, [12], "delete").tolist() == [10, 11, 13, 14, 15, 16, 17]
    assert perturb_sequence(cell, [99], "delete") is None  # not expressed: nothing to delete
    assert perturb_sequence(cell, [15], "overexpress").tolist() == [15, 10, 11, 12, 13, 14, 16, 17]
    assert perturb_sequence(cell, [99], "overexpress").tolist() == [99, *cell]  # inserted at rank 1
    assert perturb_sequence(cell, [10], "overexpress").tolist() == cell.tolist()  # already first
    # inhibit / activate: round(0.25 * 8) = 2 ranks down / up, stopping at the ends
    assert perturb_sequence(cell, [11], "inhibit", 0.25).tolist() == [10, 12, 13, 11, 14, 15, 16, 17]
    assert perturb_sequence(cell, [16], "inhibit", 0.25).tolist() == [10, 11, 12, 13, 14, 15, 17, 16]
    assert perturb_sequence(cell, [14], "activate", 0.25).tolist() == [10, 11, 14, 12, 13, 15, 16, 17]
    assert perturb_sequence(cell, [10], "activate", 0.25) is None
    assert perturb_sequence(cell, [11, 13], "delete").tolist() == [10, 12, 14, 15, 16, 17]  # together


def _reference(model, cell, genes, kind, goal):
    """One cell at a time, no padding: the similarity over the genes both sequences share, by token."""
    edited = perturb_sequence(cell, genes, kind)
    with torch.no_grad():
        before = model(input_ids=torch.as_tensor(cell)[None]).last_hidden_state[0]
        after = model(input_ids=torch.as_tensor(edited)[None]).last_hidden_state[0]
    row_before = {int(t): i for i, t in enumerate(cell)}
    row_after = {int(t): i for i, t in enumerate(edited)}
    shared = [t for t in row_after if t in row_before and t not in set(genes)]
    a = before[[row_before[t] for t in shared]].mean(0)
    b = after[[row_after[t] for t in shared]].mean(0)
    cos = torch.nn.functional.cosine_similarity
    return float(cos(a, b, dim=0)), float(cos(b, goal, dim=0) - cos(a, goal, dim=0))


@pytest.mark.parametrize("kind", ["delete", "overexpress", "inhibit"])
def test_batched_shifts_equal_one_cell_at_a_time(kind):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False).eval()
    rng = np.random.default_rng(0)
    cells = [rng.choice(np.arange(2, 60), n, replace=False) for n in (9, 4, 13, 7)]  # index and token differ
    perturbations = [Perturbation(c, (int(g),)) for c, cell in enumerate(cells) for g in cell[[0, 2, -1]]]
    perturbations.append(Perturbation(1, (59,) if 59 not in cells[1] else (58,)))  # not expressed
    goal = torch.randn(32)
    got = perturbation_shifts(model, cells, perturbations, kind, batch_size=3, goals={"g": goal.numpy()})
    for index, p in enumerate(perturbations):
        if perturb_sequence(cells[p.cell], np.asarray(p.genes), kind) is None:
            assert not got["applied"][index] and np.isnan(got["cosine_similarity"][index])
            continue
        similarity, shift = _reference(model, cells[p.cell], list(p.genes), kind, goal)
        assert got["cosine_similarity"][index] == pytest.approx(similarity, abs=1e-5)
        assert got["goal_shift_g"][index] == pytest.approx(shift, abs=1e-5)
    first = [i for i, p in enumerate(perturbations) if kind == "overexpress" and p.genes[0] == cells[p.cell][0]]
    assert all(got["cosine_similarity"][i] == pytest.approx(1.0, abs=1e-6) for i in first)


def test_screen_writes_tables_and_plot(pretrained, token_dataset, tmp_path):
    data = load_from_disk(str(token_dataset))
    vocab = json.loads((pretrained / "vocab.json").read_text())
    names = {i: g for g, i in vocab.items()}
    common = names[int(pd.Series([t for ids in data["input_ids"] for t in ids]).value_counts().index[0])]
    settings = PerturbConfig(
        genes=[common],
        state_column="cell_type",
        start_state="T",
        goal_state="B",
        max_cells=12,
        null_per_cell=5,
        batch_size=8,
    )
    genes = perturb(pretrained, token_dataset, tmp_path / "screen", settings)
    cells = pd.read_parquet(tmp_path / "screen" / "cells.parquet")
    screened = cells[~cells["null"]]
    assert set(screened["gene"]) == {common} and screened["cell_id"].nunique() <= 12
    t_cells = {c for c, t in zip(data["cell_id"], data["cell_type"], strict=True) if t == "T"}
    assert set(screened["cell_id"]) <= t_cells
    row = genes.iloc[0]
    assert row["gene"] == common and row["n_cells"] == screened["applied"].sum()
    assert row["goal_shift_B_mean"] == pytest.approx(screened.loc[screened["applied"], "goal_shift_B"].mean())
    assert 0 <= row["p_value"] <= 1 and 0 <= row["fdr"] <= 1
    assert (cells.loc[cells["null"] & cells["applied"], "gene"] != common).all()
    assert (tmp_path / "screen" / "perturbation.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "screen" / "genes.csv")["gene"].tolist() == genes["gene"].tolist()
    with pytest.raises(FileExistsError, match="screen already exists"):
        perturb(pretrained, token_dataset, tmp_path / "screen", settings)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        perturb(pretrained, token_dataset, tmp_path / "x", genes=["NOPE"])


def test_perturb_cli_screens_every_expressed_gene(pretrained, token_dataset, tmp_path, capsys):
    args = ["perturb", str(token_dataset), "--model", str(pretrained), "--out", str(tmp_path / "all")]
    assert main([*args, "--max-cells", "3", "--null-per-cell", "3", "--perturbation", "overexpress"]) == 0
    cells = pd.read_parquet(tmp_path / "all" / "cells.parquet")
    data = load_from_disk(str(token_dataset))
    per_cell = cells[~cells["null"]].groupby("cell_id").size()
    lengths = dict(zip(data["cell_id"], data["length"], strict=True))
    assert len(per_cell) == 3 and all(n == lengths[c] for c, n in per_cell.items())  # every expressed gene
    assert "wrote" in capsys.readouterr().out
