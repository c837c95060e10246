import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset, load_from_disk
from launch import two_processes
from scipy.stats import kstest
from transformers import BertConfig, BertModel

from stformer import PerturbConfig, perturb
from stformer._warnings import StformerWarning
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
    per_gene = {t: float(cos(before[row_before[t]], after[row_after[t]], dim=0)) for t in shared}
    return float(cos(a, b, dim=0)), float(cos(b, goal, dim=0) - cos(a, goal, dim=0)), per_gene


@pytest.mark.parametrize("kind", ["delete", "overexpress", "inhibit"])
def test_batched_shifts_equal_one_cell_at_a_time(kind, monkeypatch):
    monkeypatch.setattr("stformer.perturbation.engine.FULL_LENGTH", 12)  # passes of at most 3 x 12 tokens
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False).eval()
    rng = np.random.default_rng(0)
    cells = [rng.choice(np.arange(2, 60), n, replace=False) for n in (9, 4, 13, 7)]  # index and token differ
    perturbations = [Perturbation(c, (int(g),)) for c, cell in enumerate(cells) for g in cell[[0, 2, -1]]]
    perturbations.append(Perturbation(1, (59,) if 59 not in cells[1] else (58,)))  # not expressed
    goal = torch.randn(32)
    perturbations.append(perturbations[0])  # listed twice: computed once, reported twice
    got = perturbation_shifts(
        model, cells, perturbations, kind, batch_size=3, goals={"g": goal.numpy()}, gene_shifts=True
    )
    for index, p in enumerate(perturbations):
        if perturb_sequence(cells[p.cell], np.asarray(p.genes), kind) is None:
            assert not got["applied"][index] and np.isnan(got["cosine_similarity"][index])
            continue
        similarity, shift, per_gene = _reference(model, cells[p.cell], list(p.genes), kind, goal)
        assert got["cosine_similarity"][index] == pytest.approx(similarity, abs=1e-5)
        assert got["g"][index] == pytest.approx(shift, abs=1e-5)
        tokens, shifts = got["gene_shifts"][index]
        assert dict(zip(tokens.tolist(), shifts.tolist(), strict=True)) == pytest.approx(per_gene, abs=1e-5)
    # Geneformer's cell value without states: the mean over the remaining genes of each gene's own cosine
    genes = perturbation_shifts(model, cells, perturbations, kind, batch_size=3, similarity="genes")
    for index, p in enumerate(perturbations):
        if got["applied"][index]:
            per_gene = _reference(model, cells[p.cell], list(p.genes), kind, goal)[2]
            assert genes["cosine_similarity"][index] == pytest.approx(np.mean(list(per_gene.values())), abs=1e-5)
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
        null_draws=3,
        batch_size=8,
    )
    with pytest.warns(StformerWarning, match="barely tell the screened cells from cell_type='B'"):
        genes = perturb(pretrained, token_dataset, tmp_path / "screen", settings)  # random labels: no separation
    assert 0.3 < json.loads((tmp_path / "screen" / "settings.json").read_text())["state_separation"] < 0.75
    cells = pd.read_parquet(tmp_path / "screen" / "cells.parquet")
    screened = cells[~cells["null"]]
    assert set(screened["gene"]) == {common} and screened["cell_id"].nunique() <= 12
    t_cells = {c for c, t in zip(data["cell_id"], data["cell_type"], strict=True) if t == "T"}
    assert set(screened["cell_id"]) <= t_cells
    row = genes.iloc[0]
    assert row["gene"] == common and row["n_cells"] == screened["applied"].sum()
    assert row["goal_shift_mean"] == pytest.approx(screened.loc[screened["applied"], "goal_shift"].mean())
    assert 0 <= row["p_value"] <= 1 and 0 <= row["fdr"] <= 1
    assert (cells.loc[cells["null"] & cells["applied"], "gene"] != common).all()
    assert (tmp_path / "screen" / "perturbation.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "screen" / "genes.csv")["gene"].tolist() == genes["gene"].tolist()
    with pytest.raises(FileExistsError, match="screen already exists"):
        perturb(pretrained, token_dataset, tmp_path / "screen", settings)
    assert row["effect_ci_low"] <= row["effect"] <= row["effect_ci_high"]
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        perturb(pretrained, token_dataset, tmp_path / "x", genes=["NOPE"])


def test_perturb_cli_screens_every_expressed_gene(pretrained, token_dataset, tmp_path, capsys):
    args = ["perturb", str(token_dataset), "--model", str(pretrained), "--out", str(tmp_path / "all")]
    filters = ["--filter", "cell_type=T", "--filter", "sample=slide0"]  # repeated: both apply
    assert main([*args, "--max-cells", "3", "--null-draws", "2", "--perturbation", "overexpress", *filters]) == 0
    cells = pd.read_parquet(tmp_path / "all" / "cells.parquet")
    data = load_from_disk(str(token_dataset))
    chosen = data.filter(lambda row: row["cell_type"] == "T" and row["sample"] == "slide0")["cell_id"]
    assert set(cells["cell_id"]) <= set(chosen)
    per_cell = cells[~cells["null"]].groupby("cell_id").size()
    lengths = dict(zip(data["cell_id"], data["length"], strict=True))
    assert len(per_cell) == 3 and all(n == lengths[c] for c, n in per_cell.items())  # every expressed gene
    assert "wrote" in capsys.readouterr().out


def _save(model, folder, n_genes=60):
    model.save_pretrained(folder)
    vocab = {"<pad>": 0, "<mask>": 1, **{f"G{i}": i for i in range(2, n_genes + 2)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return folder


def _cells(rows, **columns):
    return Dataset.from_dict(
        {
            "input_ids": rows,
            "length": [len(r) for r in rows],
            "cell_id": [f"c{i}" for i in range(len(rows))],
            **columns,
        }
    )


def _planted_model(gene):
    """One layer where each gene's state mixes in its cell's mean; genes share a direction, ``gene`` has its own."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=62, hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16)
    model = BertModel(config, add_pooling_layer=False).eval()
    layer = model.encoder.layer[0]
    with torch.no_grad():
        layer.attention.self.query.weight.zero_()  # uniform attention: each gene sees the mean of its cell
        layer.attention.self.key.weight.zero_()
        layer.attention.self.value.weight.copy_(torch.eye(16))
        layer.attention.output.dense.weight.copy_(4 * torch.eye(16))
        layer.output.dense.weight.zero_()
        for linear in (layer.attention.self.value, layer.attention.output.dense, layer.output.dense):
            linear.bias.zero_()
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
        words = model.embeddings.word_embeddings.weight
        common = torch.randn(16)
        words[:] = common + 0.3 * torch.randn(62, 16)
        words[:, 0] = 0
        words[gene] = 0
        words[gene, 0] = 5.0
    return model


def test_a_planted_gene_tops_the_screen_with_a_small_fdr(tmp_path):
    # "sick" cells express gene 7 at a random rank, "healthy" ones do not; only 7 decides the state
    rng, planted = np.random.default_rng(1), 7
    rows, states = [], []
    for i in range(40):
        genes = rng.choice([g for g in range(2, 62) if g != planted], 20, replace=False)
        if i % 2 == 0:
            genes = np.insert(genes, rng.integers(0, 20), planted)
        rows.append(genes.tolist())
        states.append("sick" if i % 2 == 0 else "healthy")
    model = _save(_planted_model(planted), tmp_path / "model")
    genes = perturb(
        model,
        _cells(rows, state=states),
        tmp_path / "screen",
        state_column="state",
        start_state="sick",
        goal_state="healthy",
        null_draws=3,
        progress=False,
    )
    assert genes["gene"].iloc[0] == "G7" and genes["n_cells"].iloc[0] == 20
    assert genes["fdr"].iloc[0] < 0.05 and genes["goal_shift_mean"].iloc[0] > 0
    assert (genes["goal_shift_mean"].iloc[1:] < 0).all()  # deleting any other gene leaves the planted one more weight


def test_a_model_that_cannot_tell_genes_apart_gives_uniform_p_values(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=62, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[:] = model.embeddings.word_embeddings.weight[5]  # one vector for all
    rng = np.random.default_rng(2)
    rows = [rng.choice(np.arange(2, 62), 25, replace=False).tolist() for _ in range(60)]
    genes = perturb(_save(model, tmp_path / "model"), _cells(rows), tmp_path / "screen", null_draws=5, progress=False)
    p_values = genes["p_value"].dropna()
    assert len(p_values) == 60
    assert kstest(p_values, "uniform").pvalue > 0.05
    assert (p_values < 0.05).mean() < 0.15 and genes["fdr"].min() > 0.05


def test_null_genes_come_from_the_same_cell_at_the_nearest_ranks(pretrained, token_dataset, tmp_path):
    data = load_from_disk(str(token_dataset))
    vocab = json.loads((pretrained / "vocab.json").read_text())
    names = {i: g for g, i in vocab.items()}
    listed = [names[t] for t in data[0]["input_ids"][:3]]
    perturb(pretrained, token_dataset, tmp_path / "s", genes=listed, max_cells=10, null_draws=3, progress=False)
    table = pd.read_parquet(tmp_path / "s" / "cells.parquet")
    sequences = {c: [names[t] for t in ids] for c, ids in zip(data["cell_id"], data["input_ids"], strict=True)}
    null = table[table["null"]]
    assert len(null) and not null["gene"].isin(listed).any()  # a listed gene is never its own null
    for row in null.itertuples():
        sequence = sequences[row.cell_id]
        assert sequence.index(row.gene) + 1 == row.rank  # the null gene is expressed in that cell
        screened = table[(~table["null"]) & (table["cell_id"] == row.cell_id) & (table["gene"] == row.null_for)]
        assert screened["rank"].iloc[0] > 0  # a gene the cell does not express cannot be deleted: no null
        distance = [abs(i + 1 - screened["rank"].iloc[0]) for i, g in enumerate(sequence) if g not in listed]
        assert abs(row.rank - screened["rank"].iloc[0]) <= sorted(distance)[5]  # among the 6 nearest candidates


def test_a_killed_screen_continues_after_its_last_complete_chunk(pretrained, token_dataset, tmp_path, monkeypatch):
    import stformer.perturbation.screen as screen

    settings = PerturbConfig(max_cells=8, chunk_cells=2, null_draws=2, gene_shifts=True)
    perturb(pretrained, token_dataset, tmp_path / "whole", settings, progress=False)
    calls = []

    def failing_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 and fail:
            raise KeyboardInterrupt
        return perturbation_shifts(*args, **kwargs)

    monkeypatch.setattr(screen, "perturbation_shifts", failing_third)
    fail = True
    with pytest.raises(KeyboardInterrupt):
        perturb(pretrained, token_dataset, tmp_path / "again", settings, progress=False)
    assert not (tmp_path / "again").exists()
    assert len(list((tmp_path / ".again.partial").glob("chunk-*.cells.parquet"))) == 2
    fail, calls[:] = False, []
    perturb(pretrained, token_dataset, tmp_path / "again", settings, progress=False)
    assert len(calls) == 2 and not (tmp_path / ".again.partial").exists()  # only the two missing chunks
    for name in ("cells.parquet", "gene_shifts.parquet", "genes.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "again" / name), pd.read_parquet(tmp_path / "whole" / name)
        )
    # other settings: the chunks of an interrupted run are not reused
    fail, calls[:] = True, []
    with pytest.raises(KeyboardInterrupt):
        perturb(pretrained, token_dataset, tmp_path / "third", settings, progress=False)
    fail, calls[:] = False, []
    perturb(
        pretrained, token_dataset, tmp_path / "third", PerturbConfig(max_cells=8, chunk_cells=2, seed=1), progress=False
    )
    assert len(calls) == 4
    # the same settings on tokens written anew (another modification time): not reused either
    shutil.copytree(token_dataset, tmp_path / "tokens")
    fail, calls[:] = True, []
    with pytest.raises(KeyboardInterrupt):
        perturb(pretrained, tmp_path / "tokens", tmp_path / "fourth", settings, progress=False)
    for arrow in (tmp_path / "tokens").glob("*.arrow"):
        os.utime(arrow, ns=(arrow.stat().st_atime_ns, arrow.stat().st_mtime_ns + 10**9))
    fail, calls[:] = False, []
    perturb(pretrained, tmp_path / "tokens", tmp_path / "fourth", settings, progress=False)
    assert len(calls) == 4


def test_gene_shift_tables_follow_the_per_cell_rows(pretrained, token_dataset, tmp_path, monkeypatch):
    data = load_from_disk(str(token_dataset))
    vocab = json.loads((pretrained / "vocab.json").read_text())
    names = {i: g for g, i in vocab.items()}
    gene = names[data[0]["input_ids"][1]]
    perturb(pretrained, token_dataset, tmp_path / "s", genes=[gene], max_cells=6, gene_shifts=True, progress=False)
    shifts = pd.read_parquet(tmp_path / "s" / "gene_shifts.parquet")
    table = pd.read_parquet(tmp_path / "s" / "cells.parquet")
    screened = table[~table["null"] & table["applied"]]
    sequences = {c: [names[t] for t in ids] for c, ids in zip(data["cell_id"], data["input_ids"], strict=True)}
    assert set(shifts["cell_id"]) == set(screened["cell_id"])
    for cell, part in shifts.groupby("cell_id"):
        assert sorted(part["affected_gene"]) == sorted(g for g in sequences[cell] if g != gene)  # every other gene
    summary = pd.read_csv(tmp_path / "s" / "gene_shifts.csv")
    expected = shifts.groupby("affected_gene")["cosine_similarity"].mean()
    assert dict(zip(summary["affected_gene"], summary["cosine_similarity_mean"], strict=True)) == pytest.approx(
        expected.to_dict()
    )
    monkeypatch.setattr("stformer.perturbation.screen.MAX_GENE_SHIFT_ROWS", 1000)  # 160 cells x ~25 x ~25 exceed it
    with pytest.raises(ValueError, match="gene_shifts would write"):
        perturb(pretrained, token_dataset, tmp_path / "big", gene_shifts=True, max_cells=None, progress=False)


@pytest.mark.slow
def test_two_processes_share_the_cells_and_merge_one_result(pretrained, token_dataset, tmp_path):
    args = [
        str(token_dataset),
        "--model",
        str(pretrained),
        "--max-cells",
        "6",
        "--chunk-cells",
        "2",
        "--null-draws",
        "2",
    ]
    assert main(["perturb", *args, "--out", str(tmp_path / "one")]) == 0
    two_processes("-m", "stformer.cli", "perturb", *args, "--out", str(tmp_path / "two"))
    one, two = (pd.read_parquet(tmp_path / name / "cells.parquet") for name in ("one", "two"))
    pd.testing.assert_frame_equal(one, two)
