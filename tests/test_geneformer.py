"""Interoperability with Geneformer V1's public dictionaries (read from ../shared/geneformer, never copied)."""

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset, load_from_disk
from transformers import BertConfig, BertForMaskedLM

from stformer import embed, tokenize_data
from stformer._files import safe_load_pickle
from stformer.checkpoints import open_model_folder
from stformer.classify import GenericClassifier
from stformer.classify.model import BertForCellClassification
from stformer.cli import main
from stformer.pretrain import pretrain

GENEFORMER = Path(
    os.environ.get("STFORMER_GENEFORMER_DIR", Path(__file__).resolve().parents[2] / "shared" / "geneformer")
)
pytestmark = pytest.mark.skipif(
    not (GENEFORMER / "token_dictionary.pkl").exists(),
    reason=f"Geneformer's dictionaries not found in {GENEFORMER} (set STFORMER_GENEFORMER_DIR)",
)


def geneformer_rule(counts, symbols, n_counts, symbol_to_id, medians, tokens, max_length=2048):
    """Geneformer's rank-value encoding written plainly: per cell, its genes by normalized value, highest first.

    Symbols become Ensembl ids; columns of one id are summed; only genes with a median count;
    value = count / n_counts * 10,000 / median; non-zero values only; truncated at ``max_length``.
    Returns per cell a list of (token, value).
    """
    ids = [symbol_to_id.get(s) for s in symbols]
    columns: dict[str, list[int]] = {}
    for j, gene in enumerate(ids):
        if gene is not None and gene in medians and gene in tokens:
            columns.setdefault(gene, []).append(j)
    out = []
    for row, total in zip(counts, n_counts, strict=True):
        ranked = []
        for gene, js in columns.items():
            count = sum(row[j] for j in js)
            if count > 0:
                ranked.append((tokens[gene], count / total * 10_000 / medians[gene]))
        ranked.sort(key=lambda item: -item[1])
        out.append(ranked[:max_length])
    return out


@pytest.fixture(scope="module")
def geneformer_tokens(pbmc_h5ad, tmp_path_factory):
    """PBMC tokenized with Geneformer V1's dictionaries (symbols mapped to Ensembl ids)."""
    out = tmp_path_factory.mktemp("gf") / "tokens"
    tokenize_data(
        pbmc_h5ad,
        out,
        GENEFORMER / "gene_median_dictionary.pkl",
        GENEFORMER / "token_dictionary.pkl",
        gene_mapping=GENEFORMER / "gene_name_id_dict.pkl",
        metadata_columns=["bulk_labels"],
        progress=False,
    )
    return out


def test_pbmc_tokens_equal_geneformer_rule_with_its_own_dictionaries(pbmc_h5ad, geneformer_tokens):
    tokens = safe_load_pickle(GENEFORMER / "token_dictionary.pkl")
    medians = safe_load_pickle(GENEFORMER / "gene_median_dictionary.pkl")
    symbol_to_id = safe_load_pickle(GENEFORMER / "gene_name_id_dict.pkl")
    ours = load_from_disk(str(geneformer_tokens))["input_ids"]  # stformer tokenize with these three files
    adata = ad.read_h5ad(pbmc_h5ad)
    expected = geneformer_rule(
        adata.X.toarray().astype(np.float64),
        list(adata.var_names),
        adata.obs["n_counts"].to_numpy(np.float64),
        symbol_to_id,
        medians,
        tokens,
    )
    assert len(ours) == len(expected) == 700
    for got, want in zip(ours, expected, strict=True):
        value = dict(want)
        assert sorted(got) == sorted(value)  # the same genes
        # the same order up to ties: values never increase along our sequence
        values = np.array([value[t] for t in got])
        assert np.all(np.diff(values) <= 1e-6 * values[:-1])


def foreign_checkpoint(folder: Path, weights: str, max_positions: int = 2048) -> BertForMaskedLM:
    """A tiny BertForMaskedLM over Geneformer's 25,426 tokens, saved as another package would (config, weights)."""
    torch.manual_seed(0)
    vocab = safe_load_pickle(GENEFORMER / "token_dictionary.pkl")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        pad_token_id=vocab["<pad>"],
    )
    model = BertForMaskedLM(config).eval()
    if weights == "safetensors":
        model.save_pretrained(folder)
    else:  # the layout of older transformers: config.json and a torch.save'd state dict
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", f"model.{weights}" if weights == "safetensors" else "pytorch_model.bin"]
    )
    return model


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_a_foreign_checkpoint_embeds_classifies_and_continues_pretraining(weights, geneformer_tokens, tmp_path):
    model = foreign_checkpoint(tmp_path / "gf", weights)
    dictionary = GENEFORMER / "token_dictionary.pkl"
    # embeddings: the model's own forward pass, mean over each cell's genes, computed here directly
    got = embed(tmp_path / "gf", geneformer_tokens, token_dictionary=str(dictionary), bf16=False, progress=False)
    got = got["cells"]
    data = load_from_disk(str(geneformer_tokens))
    with torch.no_grad():
        for row in (0, 350, 699):
            ids = torch.as_tensor(data[row]["input_ids"])[None]
            expected = model.bert(input_ids=ids).last_hidden_state[0].mean(0).numpy()
            np.testing.assert_allclose(got[row], expected, rtol=1e-4, atol=1e-5)
    # a classifier whose encoder is frozen keeps the checkpoint's encoder weights: they were loaded
    classifier = GenericClassifier(
        classifier_type="sequence",
        metadata_column="bulk_labels",
        token_dictionary_file=str(dictionary),
        freeze_layers=2,
        training_args={"num_train_epochs": 1, "per_device_train_batch_size": 32, "disable_tqdm": True},
    )
    prepared, labels = classifier.prepare_data(str(geneformer_tokens), str(tmp_path / "cls"), "pbmc")
    classifier.train(str(tmp_path / "gf"), prepared, str(tmp_path / "cls" / "run"), id_class_dict_file=labels)
    tuned = BertForCellClassification.from_pretrained(str(tmp_path / "cls" / "run" / "model"))
    for name, value in model.bert.encoder.state_dict().items():
        torch.testing.assert_close(tuned.bert.encoder.state_dict()[name], value)
    assert json.loads((tmp_path / "cls" / "run" / "model" / "vocab.json").read_text()) == safe_load_pickle(dictionary)
    # continued pretraining keeps the checkpoint's shape (not the default 6 x 256) and starts from its weights
    summary = pretrain(
        geneformer_tokens, tmp_path / "more", init_from=str(tmp_path / "gf"), max_steps=2, batch_size=8, bf16=False
    )
    continued = BertForMaskedLM.from_pretrained(summary["model_dir"])
    assert (continued.config.hidden_size, continued.config.num_hidden_layers) == (32, 2)
    assert summary["global_step"] == 2
    start = model.bert.embeddings.word_embeddings.weight
    moved = (continued.bert.embeddings.word_embeddings.weight - start).abs().max()
    assert 0 < moved < 0.05  # two small steps from the checkpoint, not a fresh initialization


def test_checkpoint_and_dictionary_disagreements_are_named(geneformer_tokens, tmp_path):
    foreign_checkpoint(tmp_path / "gf", "safetensors")
    vocab = safe_load_pickle(GENEFORMER / "token_dictionary.pkl")
    swapped = {**vocab, "<pad>": 1, "<mask>": 0}
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    with pytest.raises(ValueError, match="has <pad>=1 but the model .* pads with id 0"):
        open_model_folder(tmp_path / "gf", tmp_path / "swapped.json")
    bigger = {**vocab, "ENSG_EXTRA": len(vocab)}
    (tmp_path / "bigger.json").write_text(json.dumps(bigger))
    with pytest.raises(ValueError, match="has 25,427 tokens but the model .* has a vocabulary of 25,426"):
        open_model_folder(tmp_path / "gf", tmp_path / "bigger.json")
    with pytest.raises(ValueError, match="holds no vocab.json: give the token dictionary"):
        open_model_folder(tmp_path / "gf")
    (tmp_path / "other").mkdir()
    shuffled = dict(
        zip(vocab, [*range(2), *np.random.default_rng(0).permutation(range(2, len(vocab))).tolist()], strict=True)
    )
    with pytest.raises(ValueError, match="tokenized with another dictionary than the model's"):
        open_model_folder(tmp_path / "gf", shuffled, tokens=geneformer_tokens)


def test_cells_longer_than_the_model_reads_are_cut_with_a_count(geneformer_tokens, tmp_path):
    model = foreign_checkpoint(tmp_path / "short", "safetensors", max_positions=64)
    data = load_from_disk(str(geneformer_tokens))
    longer = int(sum(n > 64 for n in data["length"]))
    with pytest.warns(UserWarning, match=f"{longer:,} of 700 cells .* more than 64 tokens"):
        got = embed(tmp_path / "short", geneformer_tokens, bf16=False, progress=False)[
            "cells"
        ]  # the tokens' dictionary
    with torch.no_grad():
        ids = torch.as_tensor(data[0]["input_ids"][:64])[None]  # its 64 highest-ranked genes
        np.testing.assert_allclose(
            got[0], model.bert(input_ids=ids).last_hidden_state[0].mean(0).numpy(), rtol=1e-4, atol=1e-5
        )


@pytest.mark.slow
def test_stformer_run_starts_from_a_foreign_checkpoint_and_geneformer_dictionaries(
    pbmc_h5ad, geneformer_tokens, tmp_path
):
    model = foreign_checkpoint(tmp_path / "gf", "bin")
    config = {
        "data": [str(pbmc_h5ad)],
        "output_dir": "out",
        "label_column": "bulk_labels",
        "input": {"gene_mapping": str(GENEFORMER / "gene_name_id_dict.pkl")},
        "gene_medians": str(GENEFORMER / "gene_median_dictionary.pkl"),
        "token_dictionary": str(GENEFORMER / "token_dictionary.pkl"),
        "pretrain": {"init_from": "gf", "epochs": 0},  # relative to the config file
        "classify": {"training_args": {"num_train_epochs": 1, "per_device_train_batch_size": 32, "disable_tqdm": True}},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--quiet"]) == 0
    out = tmp_path / "out"
    assert load_from_disk(str(out / "tokens"))["input_ids"] == load_from_disk(str(geneformer_tokens))["input_ids"]
    adopted = BertForMaskedLM.from_pretrained(str(out / "pretrain" / "pretrain" / "model"))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(adopted.state_dict()[name], value)
    assert (out / "report" / "summary.md").exists() and (out / "embeddings" / "cells.npy").exists()


def _v2_dictionary() -> dict[str, int]:
    """Geneformer V1's dictionary with V2's <cls> and <eos> added after the genes."""
    vocab = safe_load_pickle(GENEFORMER / "token_dictionary.pkl")
    return {**vocab, "<cls>": len(vocab), "<eos>": len(vocab) + 1}


def test_v2_cells_are_framed_by_cls_and_eos_within_max_length(pbmc_h5ad, geneformer_tokens, tmp_path):
    vocab = _v2_dictionary()
    (tmp_path / "v2.json").write_text(json.dumps(vocab))
    tokenize_data(
        pbmc_h5ad,
        tmp_path / "v2",
        GENEFORMER / "gene_median_dictionary.pkl",
        tmp_path / "v2.json",
        gene_mapping=GENEFORMER / "gene_name_id_dict.pkl",
        max_length=64,
        progress=False,
    )
    v2 = load_from_disk(str(tmp_path / "v2"))
    v1 = load_from_disk(str(geneformer_tokens))["input_ids"]
    for framed, genes, length in zip(v2["input_ids"], v1, v2["length"], strict=True):
        assert framed == [vocab["<cls>"], *genes[:62], vocab["<eos>"]]  # 62 genes + 2 = max_length
        assert length == len(framed)
    assert safe_load_pickle(tmp_path / "v2" / "lengths.pkl") == v2["length"]
    # pretraining never masks or predicts them
    from stformer.pretrain.collator import STFormerPreCollator, mask_genes, special_and_gene_ids

    special, gene_ids = special_and_gene_ids(STFormerPreCollator(vocab))
    ids = torch.as_tensor([row[:20] + row[-1:] for row in v2["input_ids"][:50]])  # (50, 21): <cls> ... <eos>
    masked, labels = mask_genes(ids, special, gene_ids, 0.9)
    assert (labels[:, [0, -1]] == -100).all() and (masked[:, [0, -1]] == ids[:, [0, -1]]).all()
    assert not torch.isin(masked[labels != -100], torch.tensor([vocab["<cls>"], vocab["<eos>"]])).any()


def test_v2_embeddings_mean_over_genes_or_pool_cls_and_perturbations_keep_the_frame(tmp_path):
    from stformer.perturbation.edits import perturb_sequence
    from stformer.perturbation.engine import Perturbation, perturbation_shifts

    vocab = _v2_dictionary()
    cls, eos = vocab["<cls>"], vocab["<eos>"]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(tmp_path / "v2model")
    rng = np.random.default_rng(0)
    cells = [rng.choice(np.arange(2, 25_000), n, replace=False) for n in (30, 12)]
    framed = [[cls, *c.tolist(), eos] for c in cells]
    data = Dataset.from_dict({"input_ids": framed, "length": [len(f) for f in framed], "cell_id": ["a", "b"]})
    mean = embed(tmp_path / "v2model", data, token_dictionary=vocab, bf16=False, progress=False)["cells"]
    pooled = embed(tmp_path / "v2model", data, token_dictionary=vocab, pooling="cls", bf16=False, progress=False)
    pooled = pooled["cells"]
    with torch.no_grad():
        for row, sequence in enumerate(framed):
            states = model.bert(input_ids=torch.as_tensor(sequence)[None]).last_hidden_state[0]
            np.testing.assert_allclose(mean[row], states[1:-1].mean(0).numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(pooled[row], states[0].numpy(), rtol=1e-4, atol=1e-5)
    # deleting a gene of a framed cell: both sequences keep <cls> first and <eos> last; genes compared by token
    gene = int(cells[0][3])
    got = perturbation_shifts(model.bert, cells, [Perturbation(0, (gene,))], "delete", frame=(cls, eos))
    edited = perturb_sequence(cells[0], [gene], "delete")
    with torch.no_grad():
        before = model.bert(input_ids=torch.as_tensor([cls, *cells[0], eos])[None]).last_hidden_state[0, 1:-1]
        after = model.bert(input_ids=torch.as_tensor([cls, *edited, eos])[None]).last_hidden_state[0, 1:-1]
    keep = torch.as_tensor(cells[0] != gene)
    expected = torch.nn.functional.cosine_similarity(before[keep].mean(0), after.mean(0), dim=0)
    assert got["cosine_similarity"][0] == pytest.approx(float(expected), abs=1e-5)
    # the cell classifier's mean leaves them out too
    classifier_config = BertConfig(**config.to_dict())
    classifier_config.special_token_ids = [0, 1, cls, eos]
    classifier = BertForCellClassification(classifier_config).eval()
    ids = torch.as_tensor(framed[1])[None]
    with torch.no_grad():
        expected = classifier.bert(input_ids=ids).last_hidden_state[0, 1:-1].mean(0)
        torch.testing.assert_close(classifier.mean_pooled(ids, torch.ones_like(ids))[0], expected)


def test_continued_pretraining_lengthens_position_embeddings_only_when_asked(geneformer_tokens, tmp_path):
    model = foreign_checkpoint(tmp_path / "short", "safetensors", max_positions=64)
    longest = max(load_from_disk(str(geneformer_tokens))["length"])
    settings = {"init_from": str(tmp_path / "short"), "max_steps": 1, "batch_size": 4, "bf16": False}
    with pytest.raises(
        ValueError, match=f"up to {longest} tokens but the model .* reads at most 64; set extend_positions"
    ):
        pretrain(geneformer_tokens, tmp_path / "no", **settings)
    summary = pretrain(geneformer_tokens, tmp_path / "yes", extend_positions=True, learning_rate=0.0, **settings)
    grown = BertForMaskedLM.from_pretrained(summary["model_dir"]).bert.embeddings.position_embeddings.weight
    learned = model.bert.embeddings.position_embeddings.weight
    assert grown.shape == (longest, 32)
    torch.testing.assert_close(grown, learned[torch.arange(longest) % 64])  # tiled; learning rate 0 keeps them
