import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from datasets import Dataset, load_from_disk
from launch import two_processes
from safetensors.torch import load_file
from torch.utils.data import RandomSampler
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM, TrainingArguments

from stformer import BertForMaskedGenes, STFormerPretrainer, load_token_dictionary
from stformer._sampling import LengthGroupedSampler
from stformer.pretrain import pretrain

FAST = {**TINY_MODEL, "batch_size": 8, "logging_steps": 5, "bf16": False}


def _model(vocab_size):
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertForMaskedGenes(config)


def _args(tmp_path, **kw):
    return TrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", per_device_train_batch_size=4, use_cpu=True, **kw
    )


@pytest.fixture
def parts(token_dataset):
    vocab = load_token_dictionary(token_dataset / "vocab.json")
    return load_from_disk(str(token_dataset)), vocab, token_dataset / "lengths.pkl"


def test_needs_model_or_model_init(parts, tmp_path):
    ds, vocab, lengths = parts
    with pytest.raises(ValueError, match="needs a model or a model_init"):
        STFormerPretrainer(_args(tmp_path), ds, vocab, lengths)


def test_sampler_choice(parts, tmp_path):
    ds, vocab, lengths = parts
    grouped = STFormerPretrainer(
        _args(tmp_path, train_sampling_strategy="group_by_length"),
        ds,
        vocab,
        lengths,
        model=_model(len(vocab)),
    )
    assert isinstance(grouped.get_train_sampler(), LengthGroupedSampler)
    plain_args = _args(tmp_path)
    plain = STFormerPretrainer(plain_args, ds, vocab, lengths, model=_model(len(vocab)))
    assert isinstance(plain.get_train_sampler(), RandomSampler)
    plain_args.group_by_length = True  # the attribute of older transformers is honoured too
    assert isinstance(plain.get_train_sampler(), LengthGroupedSampler)


def test_trainer_batches_follow_the_lengths_file(parts, tmp_path):
    ds, vocab, _ = parts
    ds = ds.add_column("idx", list(range(len(ds))))
    fake = tmp_path / "lengths.pkl"  # two length groups: even and odd examples
    fake.write_bytes(pickle.dumps([1000 * (i % 2) + 1 for i in range(len(ds))]))
    seen = []

    def recording_collator(examples):
        seen.append({e["idx"] % 2 for e in examples})
        return trainer.data_collator_inner([{"input_ids": e["input_ids"]} for e in examples])

    args = _args(tmp_path, train_sampling_strategy="group_by_length", remove_unused_columns=False)
    trainer = STFormerPretrainer(args, ds, vocab, fake, model=_model(len(vocab)), data_collator=recording_collator)
    from stformer import DataCollatorForMaskedGenes

    trainer.data_collator_inner = DataCollatorForMaskedGenes(trainer.token_collator)
    for _ in trainer.get_train_dataloader():
        pass
    assert len(seen) == len(ds) // 4
    # the dataset fits in one megabatch, sorted by the file's lengths: only the batch at the
    # boundary can mix the two groups (a random order would mix about 7 batches in 8)
    assert sum(len(parity) > 1 for parity in seen) <= 1


def test_lengths_file_must_match(parts, tmp_path):
    ds, vocab, _ = parts
    short = tmp_path / "short.pkl"
    short.write_bytes(pickle.dumps([5] * (len(ds) - 1)))
    with pytest.raises(ValueError, match=f"short.pkl: {len(ds) - 1} lengths for {len(ds)} examples"):
        STFormerPretrainer(_args(tmp_path), ds, vocab, short, model=_model(len(vocab)))


@pytest.mark.parametrize(
    ("dataset", "match"),
    [
        (Dataset.from_dict({"tokens": [[2, 3]]}), "no 'input_ids' column"),
        (Dataset.from_dict({"input_ids": [[2, 3]]}).select([]), "is empty"),
        (Dataset.from_dict({"input_ids": [[2, 3], [5, 9999]]}), "span 2..9999"),
    ],
)
def test_bad_datasets(parts, tmp_path, dataset, match):
    _, vocab, _ = parts
    lengths = tmp_path / "l.pkl"
    lengths.write_bytes(pickle.dumps([2] * len(dataset)))
    with pytest.raises(ValueError, match=match):
        STFormerPretrainer(_args(tmp_path), dataset, vocab, lengths, model=_model(len(vocab)))


def test_model_vocab_must_match(parts, tmp_path):
    ds, vocab, lengths = parts
    with pytest.raises(ValueError, match=f"vocabulary has {len(vocab) + 3} tokens but the token dictionary has"):
        STFormerPretrainer(_args(tmp_path), ds, vocab, lengths, model=_model(len(vocab) + 3))


@pytest.mark.parametrize("bf16", [False, True])
def test_masked_only_head_matches_bert_for_masked_lm(monkeypatch, bf16):
    import stformer.pretrain.model as model_module

    monkeypatch.setattr(model_module, "LOSS_ROWS", 2)  # three masked positions: two loss blocks
    torch.manual_seed(0)
    model = _model(40).eval()  # no dropout; gradients still flow
    reference = BertForMaskedLM(model.config).eval()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(2, 40, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[2, 7], labels[2, 8] = 5, 9, 11

    def run(net, autocast):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = net(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    truth, truth_grads = run(reference, False)
    theirs, their_grads = run(reference, bf16)
    ours, our_grads = run(model, bf16)
    assert "logits" not in ours and ours.predicted.shape == (3,)
    torch.testing.assert_close(ours.predicted, truth.logits[labels != -100].argmax(-1))
    assert set(our_grads) == set(truth_grads)
    if not bf16:
        torch.testing.assert_close(ours.loss, truth.loss)
        for name, grad in truth_grads.items():
            torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6)
        return
    # under bf16 autocast: as close to the fp32 result as BertForMaskedLM under autocast is
    assert abs(ours.loss - truth.loss) <= 2 * abs(theirs.loss - truth.loss) + 1e-3
    for name, grad in truth_grads.items():
        ours_err = (our_grads[name] - grad).norm() / grad.norm()
        their_err = (their_grads[name] - grad).norm() / grad.norm()
        assert ours_err <= 2 * their_err + 1e-3, name


def test_pretrain_end_to_end(token_dataset, tmp_path):
    stale = tmp_path / "pretrain" / "training" / "train_lengths.pkl"  # left by a run on other data
    stale.parent.mkdir(parents=True)
    stale.write_bytes(pickle.dumps([5, 6, 7]))
    summary = pretrain(token_dataset, tmp_path, epochs=6, eval_fraction=0.2, learning_rate=3e-3, **FAST)
    assert len(pickle.loads(stale.read_bytes())) == 128  # written for this run's training cells
    model_dir = tmp_path / "pretrain" / "model"
    assert summary["n_train"] == 128 and summary["n_eval"] == 32
    history = json.loads((tmp_path / "pretrain" / "logging" / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] - 0.3  # it learns
    assert all(0 <= h["mlm_accuracy"] <= 1 for h in history if "loss" in h)
    assert np.isfinite(summary["eval_loss"])
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    assert type(model).__name__ == "BertForMaskedLM" and model.config.hidden_size == 32
    assert model.config.attention_probs_dropout_prob == 0.0
    tok = AutoTokenizer.from_pretrained(model_dir)
    vocab = json.loads((model_dir / "vocab.json").read_text())
    assert tok.pad_token_id == vocab["<pad>"] and tok.mask_token_id == vocab["<mask>"]
    assert tok.model_max_length == model.config.max_position_embeddings == 2048
    assert model.config.vocab_size == len(vocab)
    assert not (model_dir / "training_args.bin").exists()
    with pytest.raises(FileExistsError, match="already holds checkpoints.*resume"):
        pretrain(token_dataset, tmp_path, epochs=1, **FAST)


def test_resume_gives_the_uninterrupted_result(token_dataset, tmp_path):
    run = {**FAST, "max_steps": 8, "save_steps": 4, "hidden_dropout": 0.1}
    pretrain(token_dataset, tmp_path / "a", **run)
    interrupted = tmp_path / "b" / "pretrain" / "training"
    interrupted.mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "pretrain" / "training" / "checkpoint-4", interrupted / "checkpoint-4")
    summary = pretrain(token_dataset, tmp_path / "b", resume=True, **run)
    assert summary["global_step"] == 8
    full = load_file(tmp_path / "a" / "pretrain" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "b" / "pretrain" / "model" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0)


def test_pretrain_rejects_too_long_examples(token_dataset, tmp_path):
    with pytest.raises(ValueError, match="up to .* tokens but max_length is 8"):
        pretrain(token_dataset, tmp_path, max_length=8, **FAST)


@pytest.mark.slow
def test_ddp_two_cpu_processes(token_dataset, tmp_path):
    shape = ["--num-layers", "2", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64"]
    two_processes(
        "-m", "stformer.cli", "pretrain", str(token_dataset), "--out", str(tmp_path), "--epochs", "1", "--batch-size",
        "8", *shape, "--bf16", "false",
    )  # fmt: skip
    summary = json.loads((tmp_path / "pretrain" / "logging" / "summary.json").read_text())
    assert summary["global_step"] == 10  # 160 cells / (8 per process x 2 processes)
    assert (tmp_path / "pretrain" / "model" / "model.safetensors").exists()
