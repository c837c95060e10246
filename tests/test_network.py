"""Gene networks from attention: aggregation by gene identity, a planted edge found, a calibrated differential test."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from launch import two_processes
from scipy.stats import kstest, spearmanr
from synthetic import gene_names, planted_edge_adata, planted_state_adata

from stformer import network
from stformer.cli import main
from stformer.network.attention import GeneSums
from stformer.network.statistics import coexpression, differential_test, most_significant, overlap


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


def test_differential_p_values_do_not_depend_on_how_many_relabellings_are_held_at_once(monkeypatch):
    from stformer.network import statistics

    rng = np.random.default_rng(4)
    values, present = rng.gamma(2.0, 1.0, (300, 40)), rng.random((300, 40)) < 0.7
    first = rng.permutation(np.arange(300) < 120)
    whole = differential_test(values, present, first, 3000, 1)
    monkeypatch.setattr(statistics, "LABEL_BUDGET", 300 * 7)  # blocks of 7 relabellings instead of 1,000
    pieces = differential_test(values, present, first, 3000, 1)
    np.testing.assert_array_equal(pieces[0], whole[0])
    np.testing.assert_array_equal(pieces[1], whole[1])


def _tokenized(adata, root, columns: str = ""):
    """Tokens of ``adata`` made through the CLI, with the metadata ``columns`` (comma-separated) kept."""
    root.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "cells.h5ad")
    files = {name: str(root / name) for name in ("cells.h5ad", "medians.json", "vocab.json", "tokens")}
    assert main(["medians", files["cells.h5ad"], "--out", files["medians.json"], "--method", "exact", "--quiet"]) == 0
    assert main(["vocab", "--medians", files["medians.json"], "--out", files["vocab.json"]]) == 0
    tokenize = ["tokenize", files["cells.h5ad"], "--medians", files["medians.json"], "--vocab", files["vocab.json"]]
    kept = ["--metadata-columns", columns] if columns else []
    assert main([*tokenize, "--out", files["tokens"], *kept, "--quiet"]) == 0
    return root / "tokens"


def _planted_model(root, seed: int):
    """Tokens of the planted world and a tiny model pretrained on them through the CLI (data and training seeded)."""
    tokens = _tokenized(planted_edge_adata(seed=seed), root)
    shape = ["--num-layers", "2", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64"]
    training = ["--epochs", "30", "--batch-size", "16", "--learning-rate", "0.001", "--bf16", "false"]
    training += ["--seed", str(seed)]
    assert main(["pretrain", str(tokens), "--out", str(root / "pre"), *shape, *training, "--quiet"]) == 0
    return tokens, root / "pre" / "pretrain" / "model"


PLANTED = ("ENSG00000000000", "ENSG00000000001")


def _rank_of_planted(edges: pd.DataFrame) -> int:
    pair = edges["source"].isin(PLANTED) & edges["target"].isin(PLANTED)
    return int(np.flatnonzero(pair.to_numpy())[0])


@pytest.mark.slow
def test_a_planted_edge_ranks_in_the_top_percent_of_edges(tmp_path):
    ranks = []
    for seed in range(3):
        tokens, model = _planted_model(tmp_path / str(seed), seed)
        out = tmp_path / str(seed) / "net"
        arguments = ["network", str(tokens), "--model", str(model), "--out", str(out), "--min-cells", "5"]
        assert main([*arguments, "--quiet"]) == 0
        edges = pd.read_csv(out / "edges.csv")
        assert len(edges) == 50 * 49  # every ordered pair of the 50 genes
        ranks.append(_rank_of_planted(edges))
        # every gene attends to A, the gene that tells whether B is there; the A-B pair sits high in that block
        incoming = edges.groupby("target")["weight"].mean()
        assert incoming.idxmax() == PLANTED[0]
        baseline = pd.read_csv(out / "coexpression_edges.csv")
        assert set(baseline.iloc[0][["source", "target"]]) == set(PLANTED)  # co-expression finds it too
    # measured (seeds 0-2): ranks 0, 3 and 29 of 2,450: top 1% over seeds, each seed within the top 2%
    assert np.median(ranks) < 0.01 * len(edges) and max(ranks) < 0.02 * len(edges)
    assert (out / "network.png").stat().st_size > 10_000


MARKER, TARGET, SOURCE = gene_names(3)  # the state marker (state "A" cells only), the planted edge SOURCE -> TARGET


def _state_gated_model(vocab: dict, path, seed: int = 0):
    """A 2-layer BERT whose second layer attends from SOURCE to TARGET only in the cells that hold MARKER.

    A tiny model pretrained on synthetic states does not learn attention that depends on the cell's
    state (docs/guide/network.md), so the state-specific edge is planted in the weights. Hidden
    states are sums of orthonormal directions with zero mean (LayerNorm then only rescales them).
    Layer 1: only SOURCE queries MARKER's key and reads a flag from MARKER's value; its feed-forward
    unit, relu(flag - 1.5), fires for SOURCE in marked cells alone and writes a gate direction.
    Layer 2: the gate queries TARGET's key, on top of small random attention between gene identities
    (so every edge varies from cell to cell).
    """
    from transformers import BertConfig, BertModel

    from stformer.checkpoints import save_model_folder

    hidden = 32
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=1, intermediate_size=4,
        hidden_act="relu", max_position_embeddings=256, pad_token_id=vocab["<pad>"], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = BertModel(config, add_pooling_layer=False)
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.c_[np.ones(hidden), rng.normal(size=(hidden, hidden - 1))])[0][:, 1:]  # mean-zero columns
    one, marker, target, source, flag, gate = torch.tensor(basis[:, :6].T, dtype=torch.float32)  # each (hidden,)
    identities = torch.tensor(basis[:, 6:14], dtype=torch.float32)  # (hidden, 8)

    def random_map() -> torch.Tensor:  # (hidden, hidden): small random reading of the gene identities
        return torch.tensor(rng.normal(size=(hidden, 8)) * 0.25, dtype=torch.float32) @ identities.T

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for name, parameter in model.named_parameters():
            if "LayerNorm.weight" in name:
                parameter.fill_(1.0)
        words = one + torch.tensor(rng.normal(size=(len(vocab), 8)) * 0.5, dtype=torch.float32) @ identities.T
        for gene, direction in ((MARKER, marker), (TARGET, target), (SOURCE, source)):
            words[vocab[gene]] += direction
        model.embeddings.word_embeddings.weight.copy_(words)  # (vocab, hidden)
        first, second = model.encoder.layer
        first.attention.self.query.weight.copy_(3.0 * torch.outer(flag, source))
        first.attention.self.key.weight.copy_(3.0 * torch.outer(flag, marker))
        first.attention.self.value.weight.copy_(torch.outer(flag, marker))
        first.attention.output.dense.weight.copy_(torch.eye(hidden))
        first.intermediate.dense.weight[0].copy_(flag)
        first.intermediate.dense.bias[0] = -1.5
        first.output.dense.weight[:, 0].copy_(2.0 * gate)
        second.attention.self.query.weight.copy_(2.0 * torch.outer(flag, gate) + random_map())
        second.attention.self.key.weight.copy_(2.0 * torch.outer(flag, target) + random_map())
    save_model_folder(model, path, vocab)
    return path


def _gated_world(root, seed: int, shuffles: int = 1):
    """Cells of two states told apart by MARKER (independent genes otherwise), and the state-gated model."""
    columns = ",".join(["state", *(f"shuffled_{k}" for k in range(1, shuffles + 1))])
    tokens = _tokenized(planted_state_adata(400, seed=seed, shuffles=shuffles), root, columns)
    return tokens, _state_gated_model(json.loads((tokens / "vocab.json").read_text()), root / "model")


@pytest.mark.slow
def test_a_planted_edge_of_one_state_is_the_top_differential_edge(tmp_path, capsys):
    for seed in range(3):
        tokens, model = _gated_world(tmp_path / str(seed), seed)
        out = tmp_path / str(seed) / "net"
        states = ["--state-column", "state", "--states", "A,B", "--layers", "1", "--min-cells", "5"]
        capsys.readouterr()
        assert main(["network", str(tokens), "--model", str(model), "--out", str(out), *states, "--quiet"]) == 0
        printed = capsys.readouterr().out.splitlines()
        edges = pd.read_csv(out / "edges.csv")
        tested = edges.dropna(subset=["p_value"])
        planted = tested[(tested["source"] == SOURCE) & (tested["target"] == TARGET)].iloc[0]
        assert planted["p_value"] == tested["p_value"].min() and planted["fdr"] < 0.05
        assert abs(planted["difference"]) == tested["difference"].abs().max()  # the largest change of all
        assert planted["weight_A"] > 2 * planted["weight_B"]
        assert planted["difference"] == pytest.approx(planted["weight_A"] - planted["weight_B"])
        assert tuple(most_significant(edges).iloc[0][["source", "target"]]) == (SOURCE, TARGET)
        header = next(k for k, line in enumerate(printed) if line.startswith("most significant differences, A minus B"))
        assert printed[header + 2].split()[:2] == [SOURCE, TARGET]  # the summary's table: column names, then S -> T
        found = f"({(tested['fdr'] < 0.05).sum()} of {len(tested)} tested edges at FDR < 0.05)"
        assert printed[header].endswith(f"{found}:")


@pytest.mark.slow
def test_shuffled_states_give_uniform_p_values(tmp_path):
    # the unit of replication is the relabelling: the p-values of edges sharing a gene move together
    # within one shuffle, so uniformity is asserted over ten shuffles pooled
    shuffles = 10
    tokens, model = _gated_world(tmp_path, 0, shuffles)
    p_values, with_discoveries = [], 0
    for k in range(1, shuffles + 1):
        states = {"state_column": f"shuffled_{k}", "states": ["A", "B"], "layers": [1], "min_cells": 5}
        edges = network(model, tokens, tmp_path / f"net{k}", **states, tested_edges=100, permutations=1000, seed=k,
                        progress=False)  # fmt: skip
        p_values.append(edges["p_value"].dropna().to_numpy())
        with_discoveries += bool((edges["fdr"] < 0.05).any())
    pooled = np.concatenate(p_values)
    assert len(pooled) == 100 * shuffles
    assert kstest(pooled, "uniform").pvalue > 0.01
    assert 0.02 < (pooled < 0.05).mean() < 0.08
    assert with_discoveries <= 1  # BH at 0.05 under the global null: a discovery in at most ~5% of shuffles


@pytest.mark.slow
def test_two_processes_share_the_cells_and_reduce_one_network(pretrained, token_dataset, tmp_path):
    args = ["network", str(token_dataset), "--model", str(pretrained), "--state-column", "cell_type", "--states", "T,B"]
    args += ["--min-cells", "3", "--tested-edges", "50", "--permutations", "1000", "--batch-size", "8"]
    args += ["--bf16", "false"]
    assert main([*args, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    two_processes("-m", "stformer.cli", *args, "--out", str(tmp_path / "two"), "--quiet")
    one, two = (pd.read_csv(tmp_path / name / "edges.csv").set_index(["source", "target"]) for name in ("one", "two"))
    assert len(one) == len(two) > 1000 and one.index.sort_values().equals(two.index.sort_values())
    two = two.loc[one.index]
    for column in ("n_cells", "n_cells_T", "n_cells_B"):  # every cell counted once over the two ranks
        np.testing.assert_array_equal(two[column], one[column])
    for column in ("weight", "weight_T", "weight_B", "difference"):  # batches differ: equal up to rounding
        np.testing.assert_allclose(two[column], one[column], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["p_value"], one["p_value"], atol=2e-3)
    assert one["p_value"].notna().sum() > 40  # of the 50 tested, those present in both states


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
