import pickle

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from datasets import load_from_disk
from reference import rank_value_reference
from synthetic import make_adata

from stformer import build_token_dictionary, compute_gene_medians, tokenize_data
from stformer._warnings import StformerWarning


def _setup(adata, path, **medians_kw):
    adata.write_h5ad(path)
    medians = compute_gene_medians(path, method="exact", progress=False, **medians_kw)
    return medians, build_token_dictionary(medians)


def _tokens(out):
    return [list(x) for x in load_from_disk(str(out))["input_ids"]]


def test_spot_mode_matches_reference_and_writes_lengths(tmp_path):
    adata = make_adata(150, 120, expressed=30, seed=5)
    medians, vocab = _setup(adata, tmp_path / "a.h5ad")
    # leave two genes out of the vocabulary: they must never appear
    vocab = build_token_dictionary({g: m for g, m in medians.items() if g not in adata.var_names[:2]})
    summary = tokenize_data(
        tmp_path / "a.h5ad",
        tmp_path / "out",
        medians,
        vocab,
        max_length=20,
        chunk_size=32,
        metadata_columns={"cell_type": "label"},
        progress=False,
    )
    X = adata.X.toarray()
    expected = rank_value_reference(X, list(adata.var_names), X.sum(1), medians, vocab, 20)
    assert _tokens(tmp_path / "out") == expected
    ds = load_from_disk(str(tmp_path / "out"))
    assert ds["label"] == list(adata.obs["cell_type"].astype(str))
    assert ds["obs_name"] == list(adata.obs_names)
    assert ds["cell_id"] == [f"a:{name}" for name in adata.obs_names]
    lengths = pickle.loads((tmp_path / "out" / "lengths.pkl").read_bytes())
    assert lengths == ds["length"] == [len(t) for t in expected]
    assert summary["n_tokenized"] == 150
    in_vocab = np.mean([g in vocab for g in adata.var_names])
    assert 0.5 < in_vocab < 118 / 120
    assert summary["files"][0]["gene_coverage"] == pytest.approx(in_vocab)


def test_sparse_dense_h5ad_and_loom_agree(tmp_path):
    adata = make_adata(90, 70, expressed=20, seed=6)
    medians, vocab = _setup(adata, tmp_path / "sparse.h5ad")
    dense = adata.copy()
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    adata.var["ensembl_id"] = adata.var_names
    adata.write_loom(tmp_path / "cells.loom")
    outs = {}
    for name in ["sparse.h5ad", "dense.h5ad", "cells.loom"]:
        tokenize_data(
            tmp_path / name,
            tmp_path / f"out_{name}",
            medians,
            vocab,
            chunk_size=25,
            total_counts_column=None,
            progress=False,
        )
        outs[name] = _tokens(tmp_path / f"out_{name}")
    assert outs["sparse.h5ad"] == outs["dense.h5ad"] == outs["cells.loom"]


def test_stored_totals_used_and_empty_cells_dropped(tmp_path):
    X = np.array([[4, 0, 1], [0, 0, 0], [0, 0, 7], [1, 1, 0]], dtype=np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    adata.var_names = ["A", "B", "C"]
    adata.obs["n_counts"] = [10.0, 0.0, 7.0, 2.0]
    medians = {"A": 1.0, "B": 2.0}  # C is not in the vocabulary: cell 2 becomes empty
    vocab = build_token_dictionary(medians)
    adata.write_h5ad(tmp_path / "a.h5ad")
    summary = tokenize_data(
        tmp_path / "a.h5ad", tmp_path / "out", medians, vocab, min_count_coverage=0.0, progress=False
    )
    assert _tokens(tmp_path / "out") == [[vocab["A"]], [vocab["A"], vocab["B"]]]
    assert load_from_disk(str(tmp_path / "out"))["cell_id"] == ["a:0", "a:3"]
    assert summary["n_dropped_empty"] == 2
    assert summary["files"][0]["count_coverage"] == pytest.approx(6 / 14)


def test_duplicate_gene_rules(tmp_path):
    X = np.array([[1, 5, 2]], dtype=np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    adata.var_names = ["A", "B", "A_dup"]
    adata.var["gid"] = ["A", "B", "A"]
    adata.write_h5ad(tmp_path / "a.h5ad")
    medians = {"A": 1.0, "B": 1.0}
    vocab = build_token_dictionary(medians)
    kw = {"gene_id_column": "gid", "progress": False}
    with pytest.warns(StformerWarning, match="1 matrix columns repeat"):
        tokenize_data(tmp_path / "a.h5ad", tmp_path / "sum", medians, vocab, **kw)
    with pytest.warns(StformerWarning, match="all but the first dropped"):
        tokenize_data(tmp_path / "a.h5ad", tmp_path / "first", medians, vocab, duplicate_genes="first", **kw)
    assert _tokens(tmp_path / "sum") == [[vocab["B"], vocab["A"]]]  # A = 1 + 2 < 5
    assert _tokens(tmp_path / "first") == [[vocab["B"], vocab["A"]]]
    with pytest.warns(StformerWarning, match="a.h5ad: 1 matrix columns repeat .*summed"):
        summary = tokenize_data(tmp_path / "a.h5ad", tmp_path / "sum2", medians, vocab, **kw)
    assert summary["files"][0]["n_duplicated_gene_ids"] == 1
    with pytest.raises(ValueError, match="a.h5ad: 1 duplicated gene identifiers.*'A'"):
        tokenize_data(tmp_path / "a.h5ad", tmp_path / "err", medians, vocab, duplicate_genes="error", **kw)
    assert not (tmp_path / "err").exists()


def test_layers_and_gene_mapping(tmp_path):
    adata = make_adata(60, 40, expressed=10, seed=7)
    medians, vocab = _setup(adata, tmp_path / "a.h5ad")
    tokenize_data(tmp_path / "a.h5ad", tmp_path / "base", medians, vocab, progress=False)
    symbols = adata.copy()
    symbols.layers["counts"] = symbols.X.copy()
    symbols.X = sp.csr_matrix(np.log1p(symbols.X.toarray()))
    mapping = {f"SYM{i}": g for i, g in enumerate(symbols.var_names)}
    symbols.var_names = list(mapping)
    symbols.write_h5ad(tmp_path / "sym.h5ad")
    tokenize_data(
        tmp_path / "sym.h5ad",
        tmp_path / "mapped",
        medians,
        vocab,
        layer="counts",
        gene_mapping=mapping,
        progress=False,
    )
    assert _tokens(tmp_path / "mapped") == _tokens(tmp_path / "base")


def test_nproc_two_gives_the_same_dataset(tmp_path):
    adata = make_adata(200, 60, expressed=15, seed=8)
    medians, vocab = _setup(adata, tmp_path / "a.h5ad")
    for n in (1, 2):
        tokenize_data(
            tmp_path / "a.h5ad",
            tmp_path / f"n{n}",
            medians,
            vocab,
            chunk_size=30,
            nproc=n,
            metadata_columns=["sample"],
            progress=False,
        )
    one, two = load_from_disk(str(tmp_path / "n1")), load_from_disk(str(tmp_path / "n2"))
    assert one.to_dict() == two.to_dict()


def test_neighborhood_mode(tissue, tmp_path):
    adata, _ = tissue
    adata.obsm["spatial"] = adata.obsm["spatial"] + np.random.default_rng(0).normal(
        0, 0.01, adata.obsm["spatial"].shape
    )
    path = tmp_path / "jittered.h5ad"  # no ties between distances: the nearest cells are unambiguous
    adata.write_h5ad(path)
    medians = compute_gene_medians(path, method="exact", progress=False)
    vocab = build_token_dictionary(medians)
    common = {"progress": False, "chunk_size": 50}
    tokenize_data(path, tmp_path / "spot", medians, vocab, max_length=40, **common)
    tokenize_data(
        path,
        tmp_path / "nb",
        medians,
        vocab,
        mode="neighborhood",
        max_length=80,
        sample_column="sample",
        n_neighbors=4,
        **common,
    )
    nb = load_from_disk(str(tmp_path / "nb"))
    spot = _tokens(tmp_path / "spot")
    X = adata.X.toarray()
    coords, samples = adata.obsm["spatial"], adata.obs["sample"].to_numpy()
    for i in [0, 57, 119, 120, 239]:
        ids, start = nb[i]["input_ids"], nb[i]["neighbor_start"]
        distance = np.linalg.norm(coords - coords[i], axis=1)  # brute force, same sample only, not itself
        distance[(samples != samples[i]) | (np.arange(len(coords)) == i)] = np.inf
        neighbors = np.argsort(distance)[:4]
        summed = X[neighbors].sum(0, keepdims=True)
        nb_part = rank_value_reference(summed, list(adata.var_names), [summed.sum()], medians, vocab, 80 - start)[0]
        assert len(neighbors) == 4
        assert ids[:start] == spot[i][:start]
        assert start == min(len(spot[i]), 80 - min(len(nb_part), 40))
        assert ids[start:] == nb_part


def test_neighborhood_from_stored_graph_and_radius(tmp_path):
    coords = np.array([[0, 0], [1, 0], [5, 5], [5, 6]], dtype=float)
    X = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3], [3, 0, 1]], dtype=np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X), obsm={"spatial": coords})
    adata.var_names = ["A", "B", "C"]
    adata.obsp["spatial_connectivities"] = sp.csr_matrix(
        np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=float)
    )
    adata.write_h5ad(tmp_path / "a.h5ad")
    medians = {"A": 1.0, "B": 1.0, "C": 1.0}
    vocab = build_token_dictionary(medians)
    A, B, C = vocab["A"], vocab["B"], vocab["C"]
    tokenize_data(
        tmp_path / "a.h5ad",
        tmp_path / "obsp",
        medians,
        vocab,
        mode="neighborhood",
        connectivities_key="spatial_connectivities",
        progress=False,
    )
    tokenize_data(
        tmp_path / "a.h5ad",
        tmp_path / "radius",
        medians,
        vocab,
        mode="neighborhood",
        n_neighbors=None,
        radius=1.5,
        progress=False,
    )
    assert _tokens(tmp_path / "obsp") == [[A, A, C], [B], [C], [A, C, A]]
    assert _tokens(tmp_path / "radius") == [[A, B], [B, A], [C, A, C], [A, C, C]]


def test_existing_output_is_kept(tmp_path):
    adata = make_adata(30, 20, expressed=8)
    medians, vocab = _setup(adata, tmp_path / "a.h5ad")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="out already exists.*overwrite"):
        tokenize_data(tmp_path / "a.h5ad", tmp_path / "out", medians, vocab, progress=False)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep"
    tokenize_data(tmp_path / "a.h5ad", tmp_path / "out", medians, vocab, overwrite=True, progress=False)
    assert len(load_from_disk(str(tmp_path / "out"))) == 30
    assert not (tmp_path / "out" / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad", "out"]


@pytest.fixture
def small(tmp_path):
    adata = make_adata(40, 30, expressed=10, seed=9)
    medians, vocab = _setup(adata, tmp_path / "a.h5ad")
    return adata, medians, vocab


def test_log_transformed_input_warns(small, tmp_path):
    adata, medians, vocab = small
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()))
    adata.write_h5ad(tmp_path / "log.h5ad")
    with pytest.warns(StformerWarning, match="log.h5ad.*log-transformed.*layer="):
        tokenize_data(tmp_path / "log.h5ad", tmp_path / "o1", medians, vocab, progress=False)
    tokenize_data(
        tmp_path / "log.h5ad", tmp_path / "o2", medians, vocab, accept_normalized=True, progress=False
    )  # no warning (warnings are errors in the test suite)


@pytest.mark.parametrize(
    ("change", "options", "error", "match"),
    [
        ("negative", {}, ValueError, "neg.h5ad: layer X holds a negative value \\(-1.0\\) in row 0"),
        ("symbols", {}, ValueError, "covers 0.0% of the file's genes.*gene symbols.*gene_mapping"),
        ("none", {"layer": "counts"}, KeyError, "layer 'counts' not found; available: \\['X'\\]"),
        ("none", {"metadata_columns": ["donor"]}, KeyError, "obs column 'donor'"),
        ("none", {"mode": "neighborhood", "spatial_key": "xy"}, KeyError, "obsm\\['xy'\\]"),
        ("none", {"mode": "neighborhood", "sample_column": "slide"}, KeyError, "'slide'"),
        ("none", {"gene_id_column": "ensembl"}, KeyError, "var column 'ensembl' not found"),
        ("none", {"mode": "bulk"}, ValueError, "mode must be one of"),
        ("low_totals", {}, ValueError, "'n_counts' is smaller than the sum"),
    ],
)
def test_bad_inputs(small, tmp_path, change, options, error, match):
    adata, medians, vocab = small
    adata = adata.copy()
    if change == "negative":
        adata.X = adata.X.copy()
        adata.X.data[0] = -1
    elif change == "symbols":
        adata.var_names = [f"GENE{i}" for i in range(adata.n_vars)]
    elif change == "low_totals":
        adata.obs["n_counts"] = 1.0
    path = tmp_path / "neg.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(error, match=match):
        tokenize_data(path, tmp_path / "out", medians, vocab, progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_bad_medians_and_vocab(small, tmp_path):
    _, medians, vocab = small
    with pytest.raises(ValueError, match="medians must be positive"):
        tokenize_data(tmp_path / "a.h5ad", tmp_path / "o", {**medians, "X": 0.0}, vocab)
    with pytest.raises(ValueError, match="<pad>"):
        tokenize_data(tmp_path / "a.h5ad", tmp_path / "o", medians, {"A": 0})


def test_pbmc_tokenizes_end_to_end(pbmc_h5ad, tmp_path):
    medians = compute_gene_medians(pbmc_h5ad, progress=False)
    vocab = build_token_dictionary(medians)
    summary = tokenize_data(
        pbmc_h5ad,
        tmp_path / "pbmc",
        medians,
        vocab,
        metadata_columns={"bulk_labels": "cell_type"},
        progress=False,
    )
    ds = load_from_disk(str(tmp_path / "pbmc"))
    counts = ad.read_h5ad(pbmc_h5ad).X
    assert summary["n_tokenized"] == len(ds) == 700
    assert ds["length"] == np.diff(counts.indptr).tolist()  # every expressed gene, none else
    assert len(set(ds["cell_type"])) == 10


@pytest.mark.parametrize(
    ("value", "what"), [(np.nan, "non-finite value \\(nan\\)"), (-3.0, "negative value \\(-3.0\\)")]
)
def test_bad_values_far_down_the_file_are_rejected(tmp_path, value, what):
    """A NaN or negative count in row 1,500 (past the first chunks) stops medians and tokenize."""
    adata = make_adata(1600, 40, expressed=10, seed=5)
    medians, vocab = _setup(adata, tmp_path / "ok.h5ad")
    adata.X = adata.X.copy()
    adata.X.data[adata.X.indptr[1500]] = value
    adata.write_h5ad(tmp_path / "bad.h5ad")
    match = f"bad.h5ad: layer X holds a {what} in row 1500"
    with pytest.raises(ValueError, match=match):
        compute_gene_medians(tmp_path / "bad.h5ad", progress=False)
    with pytest.raises(ValueError, match=match):
        tokenize_data(tmp_path / "bad.h5ad", tmp_path / "out", medians, vocab, chunk_size=256, nproc=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_truncated_or_foreign_file_names_the_file(small, tmp_path):
    _, medians, vocab = small
    whole = (tmp_path / "a.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.h5ad").write_text("barcode,gene,count\n")
    for name in ("cut.h5ad", "text.h5ad"):
        with pytest.raises(ValueError, match=f"{name}: not a readable h5ad \\(HDF5\\) file"):
            tokenize_data(tmp_path / name, tmp_path / "out", medians, vocab, progress=False)
        with pytest.raises(ValueError, match=f"{name}: not a readable h5ad"):
            compute_gene_medians(tmp_path / name, progress=False)


def test_missing_and_mixed_metadata_become_nulls_and_one_type(tmp_path):
    """Categorical with NaN, ints in one file and floats with NaN in another, text in one and numbers in another."""
    first, second = make_adata(20, 30, expressed=10, seed=1), make_adata(20, 30, expressed=10, seed=2)
    first.obs.loc[first.obs_names[:3], "cell_type"] = np.nan
    first.obs["age"], second.obs["age"] = np.arange(20), np.where(np.arange(20) < 2, np.nan, 40.5)
    first.obs["batch"], second.obs["batch"] = "run1", 2
    medians, vocab = _setup(first, tmp_path / "a.h5ad")
    second.write_h5ad(tmp_path / "b.h5ad")
    with pytest.warns(StformerWarning, match="'batch' holds .* values in different files; it is stored as text"):
        tokenize_data(
            [tmp_path / "a.h5ad", tmp_path / "b.h5ad"],
            tmp_path / "out",
            medians,
            vocab,
            metadata_columns=["cell_type", "age", "batch"],
            chunk_size=8,
            progress=False,
        )
    ds = load_from_disk(str(tmp_path / "out"))
    assert ds["cell_type"][:3] == [None] * 3 and ds["cell_type"][3:20] == list(first.obs["cell_type"][3:].astype(str))
    assert ds["age"][:20] == list(range(20)) and ds["age"][20:22] == [None, None] and ds["age"][22] == 40.5
    assert ds.features["age"].dtype == "float64"
    assert ds["batch"][0] == "run1" and ds["batch"][20] == "2"


def test_input_files_with_one_name_are_refused(small, tmp_path):
    adata, medians, vocab = small
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        adata.write_h5ad(tmp_path / folder / "slide.h5ad")
    with pytest.raises(ValueError, match="two input files named 'slide'.*rename one"):
        tokenize_data([tmp_path / "x" / "slide.h5ad", tmp_path / "y" / "slide.h5ad"], tmp_path / "o", medians, vocab)


def test_progress_false_prints_no_progress_bar(small, tmp_path, capfd):
    """``progress=False`` is quiet: not even the bar of the metadata that the writer saves."""
    _, medians, vocab = small
    capfd.readouterr()
    tokenize_data(tmp_path / "a.h5ad", tmp_path / "out", medians, vocab, progress=False)
    captured = capfd.readouterr()
    assert len(load_from_disk(str(tmp_path / "out"))) == 40
    assert "Saving the dataset" not in captured.err + captured.out
