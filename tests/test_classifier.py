import json
import pickle

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from launch import two_processes
from transformers import BertConfig, BertModel, TrainingArguments

from stformer import GenericClassifier, load_token_dictionary, predict_from_checkpoint
from stformer._warnings import StformerWarning
from stformer.classify.labels import read_id_class_dict
from stformer.classify.model import BertForCellClassification, drop_genes
from stformer.classify.splits import split_cells, split_genes
from stformer.classify.trainer import ClassifierTrainer

FAST = {
    "num_train_epochs": 4,
    "learning_rate": 3e-3,
    "per_device_train_batch_size": 8,
    "logging_steps": 50,
    "disable_tqdm": True,
}


def _separable_cells(vocab_size, n=120, seed=0):
    """Cells whose type decides which genes they express: an easy, learnable signal."""
    rng = np.random.default_rng(seed)
    genes = np.arange(2, vocab_size)
    pools = {
        "T": genes[: len(genes) // 3],
        "B": genes[len(genes) // 3 : 2 * len(genes) // 3],
        "NK": genes[2 * len(genes) // 3 :],
    }
    types = rng.choice(list(pools), n)
    ids = [rng.choice(pools[t], rng.integers(5, 12), replace=False).tolist() for t in types]
    return Dataset.from_dict(
        {
            "input_ids": ids,
            "length": [len(x) for x in ids],
            "cell_type": types.tolist(),
            "sample": [f"s{i % 6}" for i in range(n)],
        }
    )


@pytest.fixture
def cells(pretrained, tmp_path):
    vocab = load_token_dictionary(pretrained / "vocab.json")
    path = tmp_path / "cells.dataset"
    _separable_cells(len(vocab)).save_to_disk(str(path))
    return path


def test_sequence_classification_end_to_end(pretrained, cells, tmp_path):
    clf = GenericClassifier("cell_type", training_args=FAST, forward_batch_size=16)
    data_path, label_path = clf.prepare_data(str(cells), str(tmp_path / "out"), "pbmc")
    assert data_path.endswith("pbmc_labeled.dataset") and label_path.endswith("pbmc_id_class_dict.pkl")
    assert pickle.loads(open(label_path, "rb").read()) == {0: "B", 1: "NK", 2: "T"}  # id -> class
    trainer = clf.train(str(pretrained), data_path, str(tmp_path / "out"))
    out = tmp_path / "out"
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert metrics["macro_f1"] > 0.9  # the signal is easy: a working pipeline learns it
    assert set(metrics["per_class"]) == {"B", "NK", "T"} and np.sum(metrics["confusion_matrix"]) == 24
    assert (out / "eval_confusion_matrix.png").stat().st_size > 1000
    assert (out / "model" / "model.safetensors").exists() and not (out / "checkpoints").exists()
    assert trainer.model.config.cell_pooling == "mean" and trainer.model.config.gene_dropout == 0.1
    saved = BertForCellClassification.from_pretrained(str(out / "model"))
    assert saved.cell_norm.running_var.ne(1).all()  # the running statistics of training are kept
    torch.testing.assert_close(saved.cell_norm.running_mean, trainer.model.cell_norm.running_mean)
    batches = list(trainer.get_train_dataloader())
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    assert padded - real < 0.05 * real  # cells of similar length batched together (random order: ~35%)
    again = clf.evaluate(str(out / "model"), str(out / "eval.dataset"), label_path, str(tmp_path / "ev"))
    assert again["macro_f1"] == pytest.approx(metrics["macro_f1"])
    predicted, logits = predict_from_checkpoint(str(out / "model"), str(out / "eval.dataset"), return_logits=True)
    eval_labels = load_from_disk(str(out / "eval.dataset"))["label"]
    assert logits.shape == (24, 3)
    assert np.mean(np.asarray(predicted) == np.asarray(eval_labels)) == pytest.approx(again["accuracy"])
    saved = pickle.loads((out / "predictions.pkl").read_bytes())
    assert saved["label_ids"] == eval_labels and saved["predictions"] == predicted


def test_first_token_pooling_and_class_weights_train(pretrained, cells, tmp_path):
    clf = GenericClassifier(
        "cell_type", training_args={**FAST, "num_train_epochs": 1}, pooling="first", class_weights=True, freeze_layers=1
    )
    data_path, _ = clf.prepare_data(str(cells), str(tmp_path), "x")
    trainer = clf.train(str(pretrained), data_path, str(tmp_path))
    frozen = trainer.model.bert.encoder.layer[0].attention.self.query.weight
    assert not frozen.requires_grad and trainer.model.bert.encoder.layer[1].output.dense.weight.requires_grad
    assert trainer.model.config.cell_pooling == "first"


def test_split_by_group_keeps_samples_apart(pretrained):
    data = _separable_cells(40, n=120).map(lambda e: {"label": ["T", "B", "NK"].index(e["cell_type"])})
    train, test = split_cells(data, 0.2, 0, "sample")
    assert not set(train["sample"]) & set(test["sample"])
    train, test = split_cells(data, 0.2, 0, None)
    assert len(test) == 24 and sorted(set(test["label"])) == [0, 1, 2]
    samples = np.asarray(data["sample"]).astype(str)
    one = samples[0]
    train, test = split_cells(data, 0.2, 0, "sample", held_out=[one])  # leave one sample out
    assert set(map(str, test["sample"])) == {one} and len(test) == (samples == one).sum()
    assert one not in set(map(str, train["sample"])) and len(train) + len(test) == len(data)
    with pytest.raises(ValueError, match="held_out_groups \\['nope'\\] of split_column 'sample': not found"):
        split_cells(data, 0.2, 0, "sample", held_out=["nope"])


def test_gene_classification_holds_out_genes(pretrained, token_dataset, tmp_path):
    vocab = load_token_dictionary(pretrained / "vocab.json")
    genes = sorted(g for g in vocab if g.startswith("ENSG"))
    classes = {"tf": genes[0:10], "kinase": genes[10:20]}
    clf = GenericClassifier(
        "gene_class",
        classifier_type="token",
        gene_class_dict=classes,
        token_dictionary_file=str(pretrained / "vocab.json"),
        training_args={**FAST, "num_train_epochs": 1},
    )
    data_path, label_path = clf.prepare_data(str(token_dataset), str(tmp_path), "genes")
    assert read_id_class_dict(label_path) == {0: "kinase", 1: "tf"}
    data = load_from_disk(data_path)
    train, test = split_genes(data, 0.3, 0)

    def labeled_genes(ds):
        return {
            g
            for ids, lab in zip(ds["input_ids"], ds["labels"], strict=True)
            for g, y in zip(ids, lab, strict=True)
            if y != -100
        }

    assert labeled_genes(train) and labeled_genes(test)
    assert not labeled_genes(train) & labeled_genes(test)
    clf.train(str(pretrained), data_path, str(tmp_path))
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert set(metrics["per_class"]) == {"kinase", "tf"}
    predicted = predict_from_checkpoint(
        str(tmp_path / "model"), str(tmp_path / "eval.dataset"), classifier_type="token"
    )
    assert [len(p) for p in predicted] == load_from_disk(str(tmp_path / "eval.dataset"))["length"]


def test_bad_inputs(pretrained, cells, tmp_path):
    with pytest.raises(ValueError, match="needs gene_class_dict"):
        GenericClassifier("x", classifier_type="token")
    with pytest.raises(ValueError, match="classifier_type must be one of"):
        GenericClassifier("x", classifier_type="cells")
    with pytest.raises(ValueError, match=r"gene_dropout must lie in \[0, 1\), got 1.5"):
        GenericClassifier("x", gene_dropout=1.5)
    with pytest.raises(ValueError, match="gene_dropout applies to cell classification"):
        GenericClassifier("x", "token", gene_class_dict={"a": ["G1"]}, token_dictionary_file="v.json", gene_dropout=0.1)
    with pytest.raises(KeyError, match="metadata_column 'tissue' is not a dataset column"):
        GenericClassifier("tissue").prepare_data(str(cells), str(tmp_path), "p")
    with pytest.raises(ValueError, match="only one class left"):
        GenericClassifier("cell_type", filter_data={"cell_type": "T"}).prepare_data(str(cells), str(tmp_path), "p")
    with pytest.raises(ValueError, match=r"labels \['T'\] are not in label_mapping"):
        GenericClassifier("cell_type", label_mapping={"B": 0, "NK": 1}).prepare_data(str(cells), str(tmp_path), "p")
    big = Dataset.from_dict({"input_ids": [[2, 9999], [3, 4]], "label": [0, 1], "length": [2, 2]})
    big.save_to_disk(str(tmp_path / "big.dataset"))
    with pytest.raises(ValueError, match="holds token id 9999 but the model .* has a vocabulary of 61"):
        GenericClassifier("label").train(str(pretrained), str(tmp_path / "big.dataset"), str(tmp_path / "o"))


def test_evaluate_rejects_unseen_labels(pretrained, cells, tmp_path):
    clf = GenericClassifier("cell_type", training_args={**FAST, "num_train_epochs": 1})
    data_path, label_path = clf.prepare_data(str(cells), str(tmp_path), "p")
    clf.train(str(pretrained), data_path, str(tmp_path))
    extra = Dataset.from_dict({"input_ids": [[2, 3]], "label": [7], "length": [2]})
    extra.save_to_disk(str(tmp_path / "extra.dataset"))
    with pytest.raises(ValueError, match=r"label ids \[7\] were not seen in training"):
        clf.evaluate(str(tmp_path / "model"), str(tmp_path / "extra.dataset"), label_path, str(tmp_path / "e"))


def test_read_id_class_dict_accepts_both_directions(tmp_path):
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({0: "B", 1: "T"}))
    (tmp_path / "b.pkl").write_bytes(pickle.dumps({"B": 0, "T": 1}))
    assert read_id_class_dict(tmp_path / "a.pkl") == read_id_class_dict(tmp_path / "b.pkl") == {0: "B", 1: "T"}


def test_classify_cli(pretrained, cells, tmp_path, capsys):
    from stformer.cli import main

    config = tmp_path / "clf.json"
    config.write_text(json.dumps({"training_args": {**FAST, "num_train_epochs": 1}}))
    common = ["--metadata-column", "cell_type", "--config", str(config)]
    assert main(["classify", "prepare", "--data", str(cells), "--out", str(tmp_path), "--prefix", "c", *common]) == 0
    data = tmp_path / "c_labeled.dataset"
    assert main(["classify", "train", "--data", str(data), "--out", str(tmp_path / "run"), *common]) == 1
    assert "classify train needs --model" in capsys.readouterr().err
    args = ["--model", str(pretrained), "--data", str(data), "--out", str(tmp_path / "run")]
    assert main(["classify", "train", *args, *common]) == 0
    model = str(tmp_path / "run" / "model")
    ev = [
        "--model",
        model,
        "--data",
        str(tmp_path / "run" / "eval.dataset"),
        "--labels",
        str(tmp_path / "c_id_class_dict.pkl"),
        "--out",
        str(tmp_path / "ev"),
    ]
    assert main(["classify", "evaluate", *ev, *common]) == 0
    assert (
        main(
            [
                "classify",
                "predict",
                "--model",
                model,
                "--data",
                str(tmp_path / "run" / "eval.dataset"),
                "--out",
                str(tmp_path / "pred"),
                *common,
            ]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "pred" / "predictions.json").read_text())) == 24


@pytest.mark.slow
def test_two_processes_share_the_predictions_and_write_them_in_dataset_order(pretrained, cells, tmp_path):
    clf = GenericClassifier("cell_type", training_args={**FAST, "num_train_epochs": 1})
    data_path, _ = clf.prepare_data(str(cells), str(tmp_path), "p")
    clf.train(str(pretrained), data_path, str(tmp_path / "run"))
    args = ["classify", "predict", "--model", str(tmp_path / "run" / "model"), "--data", str(cells)]
    args += ["--forward-batch-size", "5"]  # 160 cells: uneven batches over the two ranks
    two_processes("-m", "stformer.cli", *args, "--out", str(tmp_path / "two"))
    two = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert two == predict_from_checkpoint(str(tmp_path / "run" / "model"), str(cells), batch_size=5)
    assert len(two) == len(load_from_disk(str(cells)))


def test_mean_pooled_cells_are_standardized_over_the_batch_then_by_running_statistics(pretrained):
    torch.manual_seed(0)
    model = BertForCellClassification.from_pretrained(str(pretrained), num_labels=3, hidden_dropout_prob=0.0)
    assert torch.equal(model.cell_norm.running_var, torch.ones(model.config.hidden_size))  # initialized, not loaded
    seen = []
    model.classifier.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    mask = torch.ones(6, 8, dtype=torch.long)
    mask[3:, 5:] = 0
    ids = torch.randint(2, model.config.vocab_size, (6, 8)) * mask
    model.train()
    for _ in range(30):
        model(input_ids=ids, attention_mask=mask)
    features = seen[-1]  # (cells, hidden) as the linear classifier sees them
    torch.testing.assert_close(features.mean(0), torch.zeros(features.shape[1]), atol=1e-5, rtol=0)
    variance = features.var(0, unbiased=False)  # var / (var + eps): a little under 1 for small variances
    assert variance.le(1).all() and variance.gt(0.95).all()
    model(input_ids=ids[:1], attention_mask=mask[:1])  # one cell in a training batch: running statistics
    model.eval()
    batch = model(input_ids=ids, attention_mask=mask).logits
    alone = torch.cat([model(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1]).logits for i in range(6)])
    torch.testing.assert_close(alone, batch)  # a prediction does not depend on the other cells of its batch
    torch.testing.assert_close(seen[-8], seen[-7][:1])  # the single training cell was normalized as at prediction
    config = BertConfig.from_pretrained(str(pretrained), num_labels=3)
    config.cell_pooling = "first"
    first = BertForCellClassification.from_pretrained(str(pretrained), config=config)
    assert not hasattr(first, "cell_norm")


@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_accumulation_divides_the_mean_loss(pretrained, tmp_path, weighted):
    torch.manual_seed(0)
    model = BertForCellClassification.from_pretrained(str(pretrained), num_labels=3, hidden_dropout_prob=0.0)
    batch = {
        "input_ids": torch.randint(2, model.config.vocab_size, (4, 6)),
        "attention_mask": torch.ones(4, 6, dtype=torch.long),
        "labels": torch.tensor([0, 1, 2, 1]),
    }
    weights = torch.tensor([1.0, 2.0, 3.0])

    def weighted_loss(outputs, labels, num_items_in_batch=None):
        return torch.nn.functional.cross_entropy(outputs["logits"].float(), labels, weight=weights)

    args = TrainingArguments(str(tmp_path), use_cpu=True, bf16=False, report_to="none", gradient_accumulation_steps=2)
    trainer = ClassifierTrainer(model=model, args=args, compute_loss_func=weighted_loss if weighted else None)
    trainer.current_gradient_accumulation_steps = 2
    outputs = model.train()(**batch)  # as in training_step (batch statistics in the cell head)
    expected_loss = weighted_loss(outputs, batch["labels"]) if weighted else outputs.loss
    expected_loss.backward()
    expected = {name: p.grad.clone() / 2 for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    loss = trainer.training_step(model, dict(batch), num_items_in_batch=torch.tensor(4))
    torch.testing.assert_close(loss, expected_loss.detach() / 2)
    for name, grad in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, msg=name)


def test_drop_genes_keeps_an_ordered_random_subset_of_each_cells_genes():
    torch.manual_seed(0)
    lengths = torch.randint(1, 61, (200,))
    mask = (torch.arange(60) < lengths[:, None]).long()  # (200, 60), right padding
    ids = torch.stack([torch.randperm(998)[:60] + 2 for _ in range(200)]) * mask  # distinct genes, pad id 0
    kept_ids, kept_mask = drop_genes(ids, mask, 0.3, 0)
    kept = kept_mask.sum(1)
    assert kept.min() >= 1 and kept_mask.shape == (200, int(kept.max()))
    assert torch.equal(kept_mask.bool(), torch.arange(kept_mask.shape[1]) < kept[:, None])  # still right padding
    assert not kept_ids[~kept_mask.bool()].any()  # padding holds the pad id
    for row in range(200):
        genes = iter(ids[row, : lengths[row]].tolist())
        assert all(gene in genes for gene in kept_ids[row, : kept[row]].tolist())  # a subsequence, in rank order
    assert 0.27 < 1 - kept.sum() / lengths.sum() < 0.33  # ~6,000 genes, each dropped with probability 0.3
    same_ids, same_mask = drop_genes(ids, mask, 0.0, 0)
    assert torch.equal(same_ids, ids) and torch.equal(same_mask, mask)
    lone_ids, _ = drop_genes(ids[:, :1], mask[:, :1], 0.99, 0)
    assert torch.equal(lone_ids, ids[:, :1])  # a cell keeps at least one gene


def test_gene_dropout_acts_while_training_only(pretrained):
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(str(pretrained), num_labels=3, hidden_dropout_prob=0.0)
    config.gene_dropout = 0.5
    model = BertForCellClassification.from_pretrained(str(pretrained), config=config)
    seen = []  # real genes the encoder gets, per call

    def count_genes(module, args, kwargs):
        seen.append(int(kwargs["attention_mask"].sum()))

    model.bert.register_forward_pre_hook(count_genes, with_kwargs=True)
    mask = torch.ones(4, 40, dtype=torch.long)
    ids = torch.randint(2, config.vocab_size, (4, 40))
    model.train()
    model(input_ids=ids, attention_mask=mask)
    assert 40 <= seen[-1] <= 120  # about half of the 160 genes
    model.eval()
    with torch.no_grad():
        dropping = model(input_ids=ids, attention_mask=mask).logits
        model.config.gene_dropout = 0.0
        torch.testing.assert_close(dropping, model(input_ids=ids, attention_mask=mask).logits)
    assert seen[-2:] == [160, 160]  # prediction sees every gene


def test_integer_labels_keep_their_names(pretrained, cells, tmp_path):
    """Clusters 3, 7 and 11: the label map says which id is which cluster, and reads back the same way."""
    data = load_from_disk(str(cells))
    clusters = {"T": 3, "B": 7, "NK": 11}
    data = data.add_column("cluster", [clusters[t] for t in data["cell_type"]])
    data.save_to_disk(str(tmp_path / "clusters.dataset"))
    clf = GenericClassifier("cluster", training_args={**FAST, "num_train_epochs": 1})
    data_path, label_path = clf.prepare_data(str(tmp_path / "clusters.dataset"), str(tmp_path / "out"), "c")
    id_class = read_id_class_dict(label_path)
    assert sorted(id_class.values()) == ["11", "3", "7"]
    labeled = load_from_disk(data_path)
    type_of = {str(v): k for k, v in clusters.items()}
    truth = dict(zip(map(tuple, data["input_ids"]), data["cell_type"], strict=True))
    for ids, label in zip(labeled["input_ids"], labeled["label"], strict=True):
        assert type_of[id_class[label]] == truth[tuple(ids)]
    clf.train(str(pretrained), data_path, str(tmp_path / "run"))
    metrics = clf.evaluate(
        str(tmp_path / "run" / "model"), str(tmp_path / "run" / "eval.dataset"), label_path, str(tmp_path / "ev")
    )
    assert sorted(metrics["class_order"]) == ["11", "3", "7"]
    (tmp_path / "json.json").write_text(json.dumps({"0": 3, "1": 7}))  # stformer's JSON form: keys are ids
    assert read_id_class_dict(tmp_path / "json.json") == {0: "3", 1: "7"}
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"B": "x"}))
    with pytest.raises(ValueError, match="bad.pkl: a label map needs integer class ids"):
        read_id_class_dict(tmp_path / "bad.pkl")


def test_short_fine_tuning_predicts_its_training_cells_as_training_saw_them(pretrained, tmp_path):
    """One epoch on 90 separable cells; prediction standardizes with the training cells' own statistics."""
    from safetensors.torch import load_file
    from transformers import BertModel

    vocab = load_token_dictionary(pretrained / "vocab.json")
    _separable_cells(len(vocab), n=90, seed=1).save_to_disk(str(tmp_path / "cells.dataset"))
    clf = GenericClassifier("cell_type", training_args={**FAST, "num_train_epochs": 1}, gene_dropout=0.0)
    data_path, _ = clf.prepare_data(str(tmp_path / "cells.dataset"), str(tmp_path / "out"), "c")
    clf.train(str(pretrained), data_path, str(tmp_path / "run"), eval_dataset=data_path)  # trains on all 90
    model_dir = tmp_path / "run" / "model"
    predicted = np.asarray(predict_from_checkpoint(str(model_dir), data_path))

    # The same cells through the encoder alone, in fp32, standardized with their own mean and variance.
    encoder = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    data = load_from_disk(data_path)
    pooled = []
    with torch.no_grad():
        for ids in data["input_ids"]:
            pooled.append(encoder(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).double())
    pooled = torch.stack(pooled)  # (cells, hidden)
    mean, var = pooled.mean(0), pooled.var(0)
    weights = load_file(str(model_dir / "model.safetensors"))
    torch.testing.assert_close(
        weights["cell_norm.running_mean"].double(), mean, atol=0.02 * var.sqrt().max().item(), rtol=0
    )
    torch.testing.assert_close(weights["cell_norm.running_var"].double(), var, rtol=0.1, atol=1e-6)
    standardized = ((pooled - mean) / (var + 1e-5).sqrt()).float()
    expected = (standardized @ weights["classifier.weight"].T + weights["classifier.bias"]).argmax(1).numpy()
    assert (predicted == expected).mean() >= 0.95
    labels = np.asarray(data["label"])
    assert abs((predicted == labels).mean() - (expected == labels).mean()) <= 0.05


def test_evaluate_and_predict_use_one_precision(pretrained, tmp_path):
    """A head with two nearly equal classes: any difference in precision flips some predictions."""
    vocab = load_token_dictionary(pretrained / "vocab.json")
    data = _separable_cells(len(vocab), n=120, seed=2)
    data = data.add_column("label", [0] * 60 + [1] * 60)
    data.save_to_disk(str(tmp_path / "cells.dataset"))
    torch.manual_seed(0)
    model = BertForCellClassification.from_pretrained(str(pretrained), num_labels=2)
    with torch.no_grad():
        model.classifier.weight[1] = model.classifier.weight[0] + 1e-4 * torch.randn_like(model.classifier.weight[0])
        model.classifier.bias.zero_()
    model.save_pretrained(str(tmp_path / "model"))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(pretrained)).save_pretrained(str(tmp_path / "model"))
    (tmp_path / "labels.pkl").write_bytes(pickle.dumps({0: "a", 1: "b"}))
    clf = GenericClassifier("cell_type")
    clf.evaluate(
        str(tmp_path / "model"), str(tmp_path / "cells.dataset"), str(tmp_path / "labels.pkl"), str(tmp_path / "ev")
    )
    evaluated = pickle.loads((tmp_path / "ev" / "predictions.pkl").read_bytes())["predictions"]
    predicted = predict_from_checkpoint(str(tmp_path / "model"), str(tmp_path / "cells.dataset"))
    assert evaluated == predicted


def test_older_training_args_are_translated_or_explained():
    with pytest.warns(StformerWarning, match="'warmup_ratio' is now 'warmup_steps'.*warmup_steps=0.1"):
        clf = GenericClassifier("cell_type", training_args={"warmup_ratio": 0.1, "learning_rate": 1e-3})
    assert clf.training_args == {"warmup_steps": 0.1, "learning_rate": 1e-3}
    with pytest.warns(StformerWarning, match="'group_by_length' is now 'train_sampling_strategy'"):
        clf = GenericClassifier("cell_type", training_args={"group_by_length": True})
    assert clf.training_args == {"train_sampling_strategy": "group_by_length"}
    with pytest.warns(StformerWarning, match="'evaluation_strategy' is now 'eval_strategy'"):
        assert GenericClassifier("c", training_args={"evaluation_strategy": "no"}).training_args == {
            "eval_strategy": "no"
        }
    with pytest.raises(ValueError, match="'overwrite_output_dir' is not an option.*overwrite=True"):
        GenericClassifier("cell_type", training_args={"overwrite_output_dir": True})
    with pytest.raises(ValueError, match="'learning_rat' is not an option.*did you mean 'learning_rate'"):
        GenericClassifier("cell_type", training_args={"learning_rat": 1e-3})


def test_train_and_evaluate_keep_existing_outputs(pretrained, cells, tmp_path, capsys):
    from stformer.cli import main

    clf = GenericClassifier("cell_type", training_args={**FAST, "num_train_epochs": 1})
    data_path, label_path = clf.prepare_data(str(cells), str(tmp_path), "c")
    clf.train(str(pretrained), data_path, str(tmp_path / "run"))
    model = tmp_path / "run" / "model"
    before = (model / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="run/model already exists.*overwrite=True"):
        clf.train(str(pretrained), data_path, str(tmp_path / "run"))
    assert (model / "model.safetensors").read_bytes() == before
    clf.evaluate(str(model), str(tmp_path / "run" / "eval.dataset"), label_path, str(tmp_path / "ev"))
    with pytest.raises(FileExistsError, match="ev/eval_metrics.json already exists"):
        clf.evaluate(str(model), str(tmp_path / "run" / "eval.dataset"), label_path, str(tmp_path / "ev"))
    clf.evaluate(str(model), str(tmp_path / "run" / "eval.dataset"), label_path, str(tmp_path / "ev"), overwrite=True)
    config = tmp_path / "clf.json"
    config.write_text(json.dumps({"pooling": "mean", "clas_weights": True}))
    args = ["classify", "prepare", "--data", str(cells), "--out", str(tmp_path), "--metadata-column", "cell_type"]
    assert main([*args, "--config", str(config)]) == 1
    assert "clf.json: unknown option 'clas_weights' for ClassifyConfig; did you mean 'class_weights'?" in (
        capsys.readouterr().err
    )


def test_cell_statistics_come_from_the_first_batches_holding_max_cells(pretrained):
    """An atlas's standardization: the (randomly ordered) training batches stop once max_cells cells are in."""
    torch.manual_seed(0)
    model = BertForCellClassification.from_pretrained(str(pretrained), num_labels=2).eval()
    mask = torch.ones(4, 12, dtype=torch.long)
    batches = [{"input_ids": torch.randint(5, 60, (4, 12)), "attention_mask": mask} for _ in range(3)]
    model.set_cell_statistics(batches, bf16=False, max_cells=5)  # two batches: 8 cells
    encoder = BertModel.from_pretrained(str(pretrained), add_pooling_layer=False).eval()
    with torch.no_grad():  # computed apart: each cell's last hidden states averaged, over the first 8 cells
        pooled = torch.cat([encoder(input_ids=b["input_ids"]).last_hidden_state.mean(1) for b in batches[:2]]).double()
    torch.testing.assert_close(model.cell_norm.running_mean, pooled.mean(0).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.cell_norm.running_var, pooled.var(0).float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("probe_head", [True, False])
def test_probe_head_starts_from_a_logistic_regression_on_the_frozen_cells(pretrained, tmp_path, probe_head):
    """LP-FT: with a learning rate of 0 the saved head is the probe, fitted apart here with scikit-learn."""
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression

    vocab = load_token_dictionary(pretrained / "vocab.json")
    _separable_cells(len(vocab), n=90, seed=2).save_to_disk(str(tmp_path / "cells.dataset"))
    clf = GenericClassifier(
        "cell_type",
        training_args={**FAST, "num_train_epochs": 1, "learning_rate": 0.0},
        gene_dropout=0.0,
        class_weights=True,
        probe_head=probe_head,
    )
    data_path, _ = clf.prepare_data(str(tmp_path / "cells.dataset"), str(tmp_path / "out"), "c")
    clf.train(str(pretrained), data_path, str(tmp_path / "run"), eval_dataset=data_path)  # trains on all 90
    head = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))["classifier.weight"].double()

    encoder = BertModel.from_pretrained(str(pretrained), add_pooling_layer=False).eval()
    data = load_from_disk(data_path)
    with torch.no_grad():  # each cell alone, fp32: its last hidden states averaged
        states = [encoder(input_ids=torch.tensor([ids])).last_hidden_state[0] for ids in data["input_ids"]]
    pooled = torch.stack([s.mean(0) for s in states])
    pooled = pooled.double().numpy()
    standardized = (pooled - pooled.mean(0)) / np.sqrt(pooled.var(0, ddof=1) + 1e-5)
    probe = LogisticRegression(class_weight="balanced", max_iter=5000, tol=1e-8).fit(standardized, data["label"])
    expected = torch.as_tensor(probe.coef_)
    if probe_head:
        torch.testing.assert_close(head, expected, atol=0.02 * expected.abs().max().item(), rtol=0)
        predicted = np.asarray(predict_from_checkpoint(str(tmp_path / "run" / "model"), data_path))
        assert (predicted == probe.predict(standardized)).mean() >= 0.97
    else:  # the random head of BertForSequenceClassification (std 0.02), far from the probe's
        assert head.abs().max() < 0.2 < expected.abs().max()


PROBE_ON_TWO_RANKS = """
import sys, torch, torch.distributed as dist
from stformer.classify.model import BertForCellClassification
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)  # each rank its own cells, as a sharded dataloader gives them
model = BertForCellClassification.from_pretrained(sys.argv[1], num_labels=3)
mask = torch.ones(12, 10, dtype=torch.long)
batches = [{"input_ids": torch.randint(5, 60, (12, 10)), "attention_mask": mask, "labels": torch.arange(12) % 3}]
model.fit_probe_head(batches, bf16=False, class_weights=False)
torch.save(model.classifier.weight.detach(), f"{sys.argv[2]}/head{rank}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_every_process_of_a_distributed_run_takes_the_first_processs_probe_head(pretrained, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE_ON_TWO_RANKS)
    two_processes(str(script), str(pretrained), str(tmp_path))
    first, second = (torch.load(tmp_path / f"head{r}.pt", weights_only=True) for r in (0, 1))
    assert first.abs().max() > 0.1  # a fitted probe, not the initial head (std 0.02)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
