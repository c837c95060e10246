"""One call (and one command) to pretrain a model on a tokenized dataset."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from datasets import load_from_disk
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .._config import config_or_options, load_config_file
from .._constants import (
    DEFAULT_MAX_LENGTH,
    LENGTHS_FILE,
    LOG_HISTORY_FILE,
    NEIGHBOR_START,
    PAD_TOKEN,
    TRAINING_SUMMARY_FILE,
    VOCAB_FILE,
)
from .._errors import InputError
from .._files import write_json, write_pickle
from .._hardware import bf16_is_fast
from .._warnings import StformerWarning
from ..checkpoints import open_model_folder
from ..settings import PretrainConfig
from ..vocab import load_token_dictionary
from .model import BertForMaskedGenes, bert_config, extend_position_embeddings
from .setup import check_deepspeed_config, make_output_dirs, setup_environment
from .trainer import STFormerPretrainer, load_example_lengths

__all__ = ["PretrainConfig", "pretrain"]


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# transformers 5.23 renamed gradient_checkpointing (kept as a deprecated alias until v6).
CHECKPOINTING = next(
    name for name in ("activation_checkpointing", "gradient_checkpointing") if hasattr(TrainingArguments, name)
)


def _training_arguments(config: PretrainConfig, dirs: dict, n_train: int, has_eval: bool):
    steps_per_epoch = math.ceil(n_train / (config.batch_size * config.gradient_accumulation_steps * _world_size()))
    total = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    deepspeed = None
    if config.deepspeed:
        deepspeed = check_deepspeed_config(load_config_file(config.deepspeed))
    return TrainingArguments(
        output_dir=str(dirs["training"]),
        run_name=config.run_name,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=min(config.warmup_steps, total // 10),
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        seed=config.seed,
        bf16=bf16_is_fast() if config.bf16 is None else config.bf16,
        **{CHECKPOINTING: config.gradient_checkpointing},
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        prediction_loss_only=True,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to="none",
        deepspeed=deepspeed,
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # multi-process CPU runs need it to use DDP (gloo)
        ddp_find_unused_parameters=False,  # every parameter takes part in the masked-gene loss
    )


def pretrain(
    dataset_path: str | Path,
    output_dir: str | Path,
    config: PretrainConfig | None = None,
    *,
    token_dictionary: str | Path | None = None,
    example_lengths_file: str | Path | None = None,
    resume: bool = False,
    **options,
) -> dict:
    """Pretrain a BERT masked-gene model on a dataset written by :func:`stformer.tokenize_data`.

    The vocabulary and lengths default to the ``vocab.json`` and ``lengths.pkl`` inside the
    dataset folder. Writes ``output_dir/run_name/{training,logging,model}``: checkpoints, the
    log history, and the final model (safetensors, config, ``vocab.json`` and a tokenizer for
    ``AutoTokenizer.from_pretrained``). ``resume=True`` continues from the last checkpoint.

    Options are a :class:`PretrainConfig` or its fields by keyword. Returns a summary dict.

    >>> pretrain("pbmc_tokens", "runs", num_layers=2, hidden_size=64, epochs=1)  # doctest: +SKIP
    """
    config = config_or_options(PretrainConfig, config, options)
    dataset_path = Path(dataset_path)
    vocab = load_token_dictionary(token_dictionary or dataset_path / VOCAB_FILE)
    lengths_file = Path(example_lengths_file or dataset_path / LENGTHS_FILE)
    dataset = load_from_disk(str(dataset_path))
    lengths = load_example_lengths(lengths_file)
    setup_environment(config.seed)  # before the model: its initial weights follow the seed
    model = _initial_model(config, vocab, dataset, lengths, lengths_file)
    dirs = make_output_dirs(output_dir, config.run_name)
    last = get_last_checkpoint(str(dirs["training"]))
    if last and not resume:
        msg = (
            f"{dirs['training']} already holds checkpoints; pass resume=True (--resume) to "
            "continue that run, or choose another run_name or output_dir"
        )
        raise FileExistsError(msg)
    train, evaluation = dataset, None
    train_lengths_file = lengths_file
    if config.eval_fraction > 0:
        train, evaluation, train_lengths_file = _split(dataset, lengths, config, dirs)

    args = _training_arguments(config, dirs, len(train), evaluation is not None)
    trainer = STFormerPretrainer(
        args,
        train,
        vocab,
        train_lengths_file,
        model=model,
        mlm_probability=config.mlm_probability,
        fast_kernels=config.fast_kernels,
        eval_dataset=evaluation,
    )
    if resume and last is None:
        warnings.warn(f"no checkpoint in {dirs['training']}; starting from scratch", StformerWarning, stacklevel=2)
    result = trainer.train(resume_from_checkpoint=last if resume else None)
    summary = {
        "model_dir": str(dirs["model"]),
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "n_train": len(train),
        "n_eval": 0 if evaluation is None else len(evaluation),
        "config": asdict(config),
    }
    if evaluation is not None:
        summary["eval_loss"] = trainer.evaluate()["eval_loss"]
    _save_final(trainer, vocab, dirs, summary)
    return summary


def _initial_model(config: PretrainConfig, vocab: dict, dataset, lengths: list[int], lengths_file: Path):
    """A new model of the configured shape, or the ``init_from`` checkpoint (lengthened if asked)."""
    longest = max(lengths, default=0)
    if config.init_from is None:
        mode = "neighborhood" if NEIGHBOR_START in dataset.column_names else "spot"
        max_length = config.max_length or DEFAULT_MAX_LENGTH[mode]
        if longest > max_length:
            msg = (
                f"{lengths_file}: examples have up to {longest} tokens but max_length is "
                f"{max_length}; set max_length >= {longest} or tokenize with a smaller max_length"
            )
            raise InputError(msg)
        shape = {f: getattr(config, f) for f in ("num_layers", "hidden_size", "num_heads", "intermediate_size")}
        return BertForMaskedGenes(
            bert_config(
                len(vocab),
                vocab[PAD_TOKEN],
                **shape,
                max_length=max_length,
                activation=config.activation,
                hidden_dropout=config.hidden_dropout,
                attention_dropout=config.attention_dropout,
            )
        )
    folder = open_model_folder(config.init_from, vocab)
    model = BertForMaskedGenes.from_pretrained(config.init_from)
    wanted = max(config.max_length or 0, longest)
    if wanted > folder.max_length:
        if not config.extend_positions:
            msg = (
                f"{lengths_file}: examples have up to {longest} tokens but the model {config.init_from} reads at most "
                f"{folder.max_length}; set extend_positions (new positions start from the learned ones) or tokenize "
                f"with max_length <= {folder.max_length}"
            )
            raise InputError(msg)
        extend_position_embeddings(model, wanted)
    return model


def _split(dataset, lengths: list[int], config: PretrainConfig, dirs: dict):
    """Random held-out split (seeded); writes the training part's lengths file."""
    n = len(dataset)
    n_eval = max(1, round(n * config.eval_fraction))
    if n_eval >= n:
        msg = f"eval_fraction {config.eval_fraction} leaves no training examples out of {n}"
        raise InputError(msg)
    order = np.random.default_rng(config.seed).permutation(n)
    eval_idx, train_idx = np.sort(order[:n_eval]), np.sort(order[n_eval:])
    path = dirs["training"] / f"train_{LENGTHS_FILE}"  # written anew: a resumed run gets the same (seeded) split
    write_pickle([lengths[i] for i in train_idx], path, overwrite=True)
    return dataset.select(train_idx), dataset.select(eval_idx), path


def _save_final(trainer: STFormerPretrainer, vocab: dict, dirs: dict, summary: dict) -> None:
    """Save the model, vocabulary, tokenizer and logs; the model folder appears complete or not at all."""
    partial = dirs["model"].with_name(".model.partial")
    trainer.save_model(str(partial))
    if not trainer.is_world_process_zero():
        return
    write_json(vocab, partial / VOCAB_FILE, overwrite=True)
    (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; summary.json has the settings
    shutil.rmtree(dirs["model"], ignore_errors=True)
    partial.rename(dirs["model"])
    write_json(trainer.state.log_history, dirs["logging"] / LOG_HISTORY_FILE, overwrite=True)
    write_json(json.loads(json.dumps(summary, default=str)), dirs["logging"] / TRAINING_SUMMARY_FILE, overwrite=True)
