"""Gene networks from attention: aggregation by gene identity, a planted edge found, a calibrated differential test."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kstest, spearmanr
from synthetic import planted_edge_adata

from stformer import network
from stformer.cli import main
from stformer.network.attention import GeneSums
from stformer.network.statistics import coexpression, differential_test, overlap


def test_attention_is_summed_by_gene_identity_not_position():
    # vocabulary: 0 <pad>, 1 <mask>, genes 2..5; gene 4 sits at position 2 in cell 1 and at position 0 in cell 2
    ids = torch.tensor([[2, 3, 4, 0], [4, 2, 5, 3]])
    attention = torch.tensor(
        [
            [[0.5, 0.2, 0.3, 0.0], [0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]],
            [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.15, 0.25, 0.2, 0.4], [0.7, 0.1, 0.1, 0.1]],
        ]
    )
    genes = [2, 3, 4, 5]
    index = torch.full((6,), -1, dtype=torch.int64)
    index[torch.tensor(genes)] = torch.arange(4)
    sums = GeneSums(index, 4)
    sums.add(attention, ids, torch.tensor([3, 4]), torch.tensor([0, 0]))
    weight = (sums.sums[0] / sums.counts[0]).reshape(4, 4)
    # by hand: gene 2 -> gene 4 is cell 1's [0, 2] (x3 genes) and cell 2's [1, 0] (x4 genes)
    assert weight[0, 2].item() == pytest.approx((0.3 * 3 + 0.4 * 4) / 2)
    assert weight[2, 0].item() == pytest.approx((0.25 * 3 + 0.2 * 4) / 2)  # gene 4 -> gene 2
    assert weight[3, 1].item() == pytest.approx(0.4 * 4)  # gene 5 (position 2) -> gene 3 (position 3): cell 2 only
    assert sums.counts[0].reshape(4, 4)[3, 1] == 1 and sums.counts[0].reshape(4, 4)[0, 1] == 2
    assert torch.isnan(weight.diagonal()).all()  # no self edges
    assert sums.gene_cells[0].tolist() == [2, 2, 2, 1]


def _by_hand(model_dir, tokens, cells):
    """Edge weights from transformers' own attention output (eager attention), in plain loops."""
    from datasets import load_from_disk
    from transformers import BertModel

    model = BertModel.from_pretrained(str(model_dir), attn_implementation="eager", add_pooling_layer=False).eval()
    sums, counts = {}, {}
    for row in load_from_disk(str(tokens)).select(cells)["input_ids"]:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([row]), output_attentions=True)
        mean = torch.stack(out.attentions).mean((0, 2))[0]  # (seq, seq): layers and heads averaged
        for a, gene_a in enumerate(row):
            for b, gene_b in enumerate(row):
                if a != b:
                    sums[gene_a, gene_b] = sums.get((gene_a, gene_b), 0) + len(row) * mean[a, b].item()
                    counts[gene_a, gene_b] = counts.get((gene_a, gene_b), 0) + 1
    return {pair: sums[pair] / counts[pair] for pair in sums}, counts


def test_network_weights_equal_attention_computed_by_transformers(pretrained, token_dataset, tmp_path):
    edges = network(pretrained, token_dataset, tmp_path / "net", max_cells=20, min_cells=3, bf16=False, progress=False)
    vocab = json.loads((token_dataset / "vocab.json").read_text())
    recorded = json.loads((tmp_path / "net" / "settings.json").read_text())
    assert recorded["cells"] == 20
    cells = np.sort(np.random.default_rng(42).choice(160, 20, replace=False))  # the seeded draw of max_cells
    weights, counts = _by_hand(pretrained, token_dataset, cells)
    for row in edges.head(50).itertuples():
        pair = (vocab[row.source], vocab[row.target])
        assert row.n_cells == counts[pair] >= 3
        assert row.weight == pytest.approx(weights[pair], rel=1e-4)
    assert (edges["weight"].diff().dropna() <= 0).all()  # strongest first


def test_coexpression_is_spearman_and_overlap_counts_shared_pairs():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, (80, 6)).astype(float)
    x[:, 1] = x[:, 0] + rng.poisson(0.2, 80)
    rho, both = coexpression(x)
    np.testing.assert_allclose(rho, spearmanr(x).statistic, atol=1e-10)
    assert both[0, 1] == ((x[:, 0] > 0) & (x[:, 1] > 0)).sum()
    attention = np.full((6, 6), 0.5)
    attention[1, 0] = 3.0  # one direction is enough
    assert overlap(attention, rho, 1) == {"k": 1, "shared": 1, "expected": round(1 / 15, 2)}


def test_differential_p_values_are_uniform_under_the_null_and_small_for_a_planted_difference():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = rng.gamma(2.0, 1.0, (120, 300))  # cells x edges, skewed like attention
        present = rng.random((120, 300)) < 0.7
        first = rng.permutation(np.arange(120) < 50)
        values[first, 0] += 3.0  # edge 0 is stronger in the first state
        difference, p = differential_test(values, present, first, 2000, seed)
        assert kstest(p[1:], "uniform").pvalue > 0.01
        assert p[0] < 2e-3 and difference[0] == pytest.approx(3.0, abs=0.8)
        shuffled = differential_test(values, present, rng.permutation(first), 2000, seed)[1]
        assert kstest(shuffled[1:], "uniform").pvalue > 0.01


def _planted_model(root, *, everywhere: bool):
    """Tokens of a planted world and a tiny model pretrained on them through the CLI."""
    planted_edge_adata(everywhere=everywhere).write_h5ad(root / "cells.h5ad")
    files = {name: str(root / name) for name in ("cells.h5ad", "medians.json", "vocab.json", "tokens", "pre")}
    assert main(["medians", files["cells.h5ad"], "--out", files["medians.json"], "--method", "exact", "--quiet"]) == 0
    assert main(["vocab", "--medians", files["medians.json"], "--out", files["vocab.json"]]) == 0
    tokenize = ["tokenize", files["cells.h5ad"], "--medians", files["medians.json"], "--vocab", files["vocab.json"]]
    assert main([*tokenize, "--out", files["tokens"], "--metadata-columns", "state,shuffled", "--quiet"]) == 0
    shape = ["--num-layers", "2", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64"]
    training = ["--epochs", "30", "--batch-size", "16", "--learning-rate", "0.001", "--bf16", "false"]
    assert main(["pretrain", files["tokens"], "--out", files["pre"], *shape, *training, "--quiet"]) == 0
    return root / "tokens", root / "pre" / "pretrain" / "model"


PLANTED = ("ENSG00000000000", "ENSG00000000001")


def _rank_of_planted(edges: pd.DataFrame) -> int:
    pair = edges["source"].isin(PLANTED) & edges["target"].isin(PLANTED)
    return int(np.flatnonzero(pair.to_numpy())[0])


@pytest.mark.slow
def test_a_planted_edge_ranks_in_the_top_percent_of_edges(tmp_path):
    tokens, model = _planted_model(tmp_path, everywhere=True)
    out = tmp_path / "net"
    assert main(["network", str(tokens), "--model", str(model), "--out", str(out), "--min-cells", "5", "--quiet"]) == 0
    edges = pd.read_csv(out / "edges.csv")
    assert len(edges) == 50 * 49  # every ordered pair of the 50 genes
    # every gene attends to A, the gene that tells whether B is there: B -> A sits inside that block
    # (ranks 20-24 of 2,450 in three trainings), so the pair is asserted within the top 2%
    assert _rank_of_planted(edges) < 0.02 * len(edges)
    incoming = edges.groupby("target")["weight"].mean()
    assert incoming.idxmax() == PLANTED[0]
    baseline = pd.read_csv(out / "coexpression_edges.csv")
    assert set(baseline.iloc[0][["source", "target"]]) == set(PLANTED)  # co-expression finds it too
    assert (out / "network.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def state_world(tmp_path_factory):
    return _planted_model(tmp_path_factory.mktemp("states"), everywhere=False)


@pytest.mark.slow
def test_shuffled_states_give_uniform_p_values(state_world, tmp_path):
    tokens, model = state_world
    edges = network(model, tokens, tmp_path / "net", state_column="shuffled", states=["A", "B"], min_cells=5,
                    tested_edges=200, permutations=2000, progress=False)  # fmt: skip
    p = edges["p_value"].dropna()
    assert len(p) == 200
    assert kstest(p, "uniform").pvalue > 0.01
    assert (edges["fdr"] < 0.05).sum() == 0


def _two_genes_never_together(tokens) -> list[str]:
    from datasets import load_from_disk

    vocab = json.loads((tokens / "vocab.json").read_text())
    cells = np.zeros((160, len(vocab)), dtype=bool)
    for c, row in enumerate(load_from_disk(str(tokens))["input_ids"]):
        cells[c, row] = True
    together = cells.T.astype(int) @ cells.astype(int)
    a, b = np.argwhere((together == 0) & (np.diag(together)[:, None] > 0) & (np.diag(together)[None, :] > 0))[0]
    names = {i: g for g, i in vocab.items()}
    return [names[a], names[b]]


def test_bad_inputs_get_one_line_errors(pretrained, token_dataset, tmp_path, capsys):
    from stformer.checkpoints import open_model_folder, save_model_folder
    from stformer.pretrain.model import BertForMaskedGenes

    folder = open_model_folder(pretrained)
    folder.config.num_hidden_layers = 0
    save_model_folder(BertForMaskedGenes(folder.config), tmp_path / "no_layers", folder.vocab)
    base = ["network", str(token_dataset), "--out", str(tmp_path / "net"), "--quiet"]
    apart = _two_genes_never_together(token_dataset)
    cases = [
        (["--model", str(tmp_path / "no_layers")], "no self-attention layers"),
        (["--model", str(pretrained), "--state-column", "cell_type", "--states", "T,Q"], "no cell has cell_type='Q'"),
        (
            ["--model", str(pretrained), "--genes", ",".join(apart), "--min-cells", "1"],
            "no cell holds two of the listed",
        ),
        (["--model", str(pretrained), "--layers", "5"], "layers must lie in [-2, 1]"),
        (["--model", str(pretrained), "--states", "T,B"], "states needs state_column"),
    ]
    capsys.readouterr()
    for extra, message in cases:
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("stformer network")]  # not transformers' bars
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "net").exists()
