import os
import time

import numpy as np
import scipy.sparse as sp
from synthetic import make_adata

from stformer import InputOptions, TokenizerConfig
from stformer._sampling import stratified_subsample
from stformer.report import logistic_baseline
from stformer.tokenize import forget_input_files, read_coordinates, read_expression, read_neighbor_expression
from stformer.tokenize.neighbors import spatial_neighbors


def test_stratified_subsample_keeps_class_proportions():
    labels = np.repeat(["a", "b", "c"], [600, 300, 100])
    chosen = stratified_subsample(labels, 100)
    assert np.all(np.diff(chosen) > 0)
    assert [int((labels[chosen] == c).sum()) for c in "abc"] == [60, 30, 10]
    assert stratified_subsample(labels[:50], 100).tolist() == list(range(50))


def test_baseline_reads_only_the_asked_cells_of_the_chosen_layer(tmp_path):
    adata = make_adata(40, 30, expressed=12, seed=3)
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.ones(adata.shape, dtype=np.float32))
    adata.write_h5ad(tmp_path / "s.h5ad")
    vocab = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(adata.var_names[:20])}}
    ids = np.array(["s:cell7", "s:cell2", "s:cell30"])
    x = read_expression([tmp_path / "s.h5ad"], InputOptions(layer="counts"), vocab, ids).toarray()
    counts = adata.layers["counts"].toarray()
    expected = np.log1p(counts[[7, 2, 30], :20] / counts[[7, 2, 30]].sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(x[:, 2:], expected, rtol=1e-6)
    assert not x[:, :2].any()  # special tokens have no expression
    labels = np.arange(40) % 2
    train = (np.array([f"s:cell{i}" for i in range(30)]), labels[:30])
    test = (np.array([f"s:cell{i}" for i in range(30, 40)]), labels[30:])
    options = InputOptions(layer="counts")
    result = logistic_baseline(
        lambda ids: read_expression([tmp_path / "s.h5ad"], options, vocab, ids), train, test, max_train=10
    )
    assert (result["n_train"], result["n_train_available"], result["n_test"]) == (10, 30, 10)
    assert 0 <= result["macro_f1"] <= 1


def test_reads_in_pieces_give_the_asked_rows_in_order_and_out_of_order(tmp_path, monkeypatch):
    import stformer.tokenize.inputs as inputs

    monkeypatch.setattr(inputs, "READ_PIECE", 2)
    adata = make_adata(20, 15, expressed=8, seed=4)
    adata.write_h5ad(tmp_path / "s.h5ad")
    vocab = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(adata.var_names)}}
    counts = adata.X.toarray()
    normalized = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)  # (cells, genes)
    for rows in ([1, 3, 4, 8, 19], [19, 4, 1, 8, 3]):
        ids = np.array([f"s:cell{i}" for i in rows])
        x = read_expression([tmp_path / "s.h5ad"], InputOptions(), vocab, ids)
        np.testing.assert_allclose(x.toarray()[:, 2:], normalized[rows], rtol=1e-6)


def test_neighbor_expression_averages_the_cells_within_the_radius_of_the_same_sample(tmp_path):
    adata = make_adata(50, 30, expressed=12, n_samples=2, seed=5)  # a unit grid per sample
    adata.write_h5ad(tmp_path / "t.h5ad")
    vocab = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(adata.var_names)}}
    ids = np.array(["t:cell12", "t:cell0", "t:cell30"])
    config = TokenizerConfig(n_neighbors=None, radius=1.01, sample_column="sample")
    got = read_neighbor_expression([tmp_path / "t.h5ad"], config, vocab, ids).toarray()[:, 2:]
    coords, samples = adata.obsm["spatial"], np.asarray(adata.obs["sample"])
    counts = adata.X.toarray()
    expression = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    for row, name in enumerate(ids):
        i = int(name.split("cell")[1])
        near = (np.linalg.norm(coords - coords[i], axis=1) < 1.01) & (samples == samples[i])
        near[i] = False
        np.testing.assert_allclose(got[row], expression[near].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(read_coordinates([tmp_path / "t.h5ad"], config, ids, "spatial"), coords[[12, 0, 30]])


def test_a_rewritten_input_file_is_read_anew(tmp_path):
    """The per-file index and neighbor graph kept between reads are those of the file as it is now."""
    path = tmp_path / "s.h5ad"
    first = make_adata(30, 20, expressed=10, seed=1)
    first.write_h5ad(path)
    vocab = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(first.var_names)}}
    ids = np.array(["s:cell4", "s:cell9"])
    config = TokenizerConfig(mode="neighborhood", n_neighbors=2)
    before = read_neighbor_expression([path], config, vocab, ids).toarray()
    second = make_adata(30, 20, expressed=10, seed=2)
    second.obsm["spatial"] = np.random.default_rng(2).uniform(0, 6, size=(30, 2))  # other neighbors, no ties
    second.write_h5ad(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new modification time, however coarse
    after = read_neighbor_expression([path], config, vocab, ids).toarray()
    coords = second.obsm["spatial"]
    distances = np.linalg.norm(coords[[4, 9], None] - coords[None], axis=2)  # (2, cells), computed apart
    fresh_graph = np.zeros_like(distances)
    for row, nearest in enumerate(np.argsort(distances, axis=1)[:, 1:3]):  # the 2 nearest, self excluded
        fresh_graph[row, nearest] = 1
    counts = second.X.toarray()
    normalized = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    expected = (fresh_graph @ normalized) / fresh_graph.sum(1, keepdims=True)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after[:, 2:], np.asarray(expected), rtol=1e-6)


def test_forget_input_files_drops_the_kept_index_and_graph_and_reads_stay_the_same(tmp_path):
    import stformer.tokenize.inputs as inputs

    adata = make_adata(30, 20, expressed=10, seed=3)
    adata.write_h5ad(tmp_path / "s.h5ad")
    vocab = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(adata.var_names)}}
    ids = np.array(["s:cell4", "s:cell9"])
    config = TokenizerConfig(mode="neighborhood", n_neighbors=2)
    before = read_neighbor_expression([tmp_path / "s.h5ad"], config, vocab, ids).toarray()
    assert any(key[1] == str(tmp_path / "s.h5ad") for key in inputs._PER_FILE)
    forget_input_files()
    assert not inputs._PER_FILE
    np.testing.assert_array_equal(read_neighbor_expression([tmp_path / "s.h5ad"], config, vocab, ids).toarray(), before)


def _brute_force_neighbors(coords, samples, rows, n_neighbors, radius):
    """(rows, cells) 0/1: the n_neighbors nearest other cells of the same sample within radius, by distances."""
    distances = np.linalg.norm(coords[rows, None] - coords[None], axis=2)  # (rows, cells)
    distances[samples[rows, None] != samples[None]] = np.inf
    distances[np.arange(len(rows)), rows] = np.inf
    within = distances <= (np.inf if radius is None else radius)
    if n_neighbors is not None:
        within &= distances <= np.sort(distances, axis=1)[:, [n_neighbors - 1]]
    return (within & np.isfinite(distances)).astype(float)


def test_the_neighbors_of_a_few_rows_are_those_of_the_whole_graph_and_of_the_distances():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 10, size=(300, 2))
    samples = rng.choice(["a", "b", "c"], size=300).astype("U5")
    samples[7] = "alone"  # a sample of one cell has no neighbors
    rows = np.array([7, 250, 3, 99, 3 + 1])
    for n_neighbors, radius in [(6, None), (6, 1.0), (None, 1.2)]:
        rows_of = spatial_neighbors(coords, samples, n_neighbors=n_neighbors, radius=radius)
        expected = _brute_force_neighbors(coords, samples, rows, n_neighbors, radius)
        np.testing.assert_array_equal(rows_of(rows).toarray(), expected)
        np.testing.assert_array_equal(rows_of(np.arange(300))[rows].toarray(), expected)
    assert not rows_of(np.array([7])).nnz
