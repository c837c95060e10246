"""STFormerPretrainer: a Hugging Face Trainer for masked-gene pretraining."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler
from transformers import TrainingArguments

from .._constants import INPUT_IDS, LABELS
from .._datasets import token_id_range
from .._errors import InputError
from .._files import safe_load_pickle
from .._kernels import FastKernelsTrainer
from .._sampling import LengthGroupedSampler
from ..hf_tokenizer import build_custom_tokenizer
from .collator import IGNORE_INDEX, STFormerPreCollator, mask_genes, special_and_gene_ids

__all__ = ["STFormerPretrainer", "load_example_lengths"]


def load_example_lengths(file_path: str | Path) -> list[int]:
    """Load the list of example lengths (a pickle, read with the restricted unpickler)."""
    lengths = safe_load_pickle(file_path)
    if not isinstance(lengths, list) or not all(type(n) is int and n >= 0 for n in lengths):
        msg = f"{file_path}: expected a list of non-negative integers (one length per example)"
        raise InputError(msg)
    return lengths


def check_token_dataset(dataset, vocab_size: int, *, name: str = "train_dataset") -> None:
    """Fail before training on an empty dataset, no ``input_ids`` or ids outside the vocabulary."""
    if INPUT_IDS not in dataset.column_names:
        msg = f"{name} has no {INPUT_IDS!r} column (columns: {dataset.column_names}); tokenize it first"
        raise InputError(msg)
    if len(dataset) == 0:
        msg = f"{name} is empty"
        raise InputError(msg)
    span = token_id_range(dataset)
    if span is None:
        msg = f"{name}: every example has an empty {INPUT_IDS!r}"
        raise InputError(msg)
    low, high = span
    if low < 0 or high >= vocab_size:
        msg = (
            f"{name}: token ids span {low}..{high} but the vocabulary has {vocab_size} tokens; "
            "the dataset was tokenized with another vocabulary"
        )
        raise InputError(msg)


class STFormerPretrainer(FastKernelsTrainer):
    """Trainer for masked-gene pretraining on rank-value token datasets.

    Batches are padded to their longest example and masked as BERT does (:func:`mask_genes`)
    in ``compute_loss``, with a generator seeded by (seed, step, micro-batch, process): a resumed
    run repeats the masks of an uninterrupted one. A ``data_collator`` that already returns
    ``labels`` (e.g. :class:`DataCollatorForMaskedGenes`) is used as it is. With length grouping on
    (``args.train_sampling_strategy == "group_by_length"``, or an ``args.group_by_length``
    attribute set to True) batches hold cells of similar length, taken from
    ``example_lengths_file``, which must have one entry per example. The log gets
    ``mlm_accuracy``: the fraction of masked tokens predicted right since the last log.

    Raises ``ValueError`` when neither ``model`` nor ``model_init`` is given, and on bad inputs
    (missing ``input_ids``, empty dataset, ids outside the vocabulary, a model whose vocabulary
    size differs, a lengths file of the wrong size).
    """

    def __init__(
        self,
        args: TrainingArguments,
        train_dataset,
        token_dictionary: dict[str, int],
        example_lengths_file: str | Path,
        model: torch.nn.Module | None = None,
        model_init: Callable[[], torch.nn.Module] | None = None,
        mlm_probability: float = 0.15,
        **kwargs,
    ):
        if model is None and model_init is None:
            msg = "STFormerPretrainer needs a model or a model_init"
            raise InputError(msg)
        self.token_collator = STFormerPreCollator(token_dictionary)
        vocab_size = len(self.token_collator)
        check_token_dataset(train_dataset, vocab_size)
        model_vocab = getattr(getattr(model, "config", None), "vocab_size", vocab_size)
        if model_vocab != vocab_size:
            msg = (
                f"the model's vocabulary has {model_vocab} tokens but the token dictionary has "
                f"{vocab_size}; build the model with vocab_size={vocab_size}"
            )
            raise InputError(msg)
        self.example_lengths = load_example_lengths(example_lengths_file)
        if len(self.example_lengths) != len(train_dataset):
            msg = (
                f"{example_lengths_file}: {len(self.example_lengths)} lengths for "
                f"{len(train_dataset)} examples; it must hold one length per example, in order "
                "(use the lengths.pkl written with this dataset)"
            )
            raise InputError(msg)
        if not 0 < mlm_probability < 1:
            msg = f"mlm_probability must lie in (0, 1), got {mlm_probability}"
            raise InputError(msg)
        self.mlm_probability = mlm_probability
        self._special_ids, self._gene_ids = special_and_gene_ids(self.token_collator)
        self._mask_key, self._mask_calls = None, 0
        kwargs.setdefault("data_collator", partial(self.token_collator.pad, return_tensors="pt"))
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        kwargs.setdefault("processing_class", build_custom_tokenizer(token_dictionary, model_max_length=max_length))
        super().__init__(model=model, args=args, train_dataset=train_dataset, model_init=model_init, **kwargs)
        self._mlm_hits = self._mlm_total = 0

    @property
    def groups_by_length(self) -> bool:
        """Whether training batches are grouped by length."""
        return getattr(self.args, "group_by_length", False) or self.args.train_sampling_strategy == "group_by_length"

    def get_train_sampler(self) -> Sampler | None:
        """Length-grouped sampler from the lengths file when grouping is on, else random."""
        if self.train_dataset is None:
            return None
        if self.groups_by_length:
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(self.example_lengths, batch, self.args.seed)
        return RandomSampler(self.train_dataset)

    def _get_train_sampler(self, train_dataset=None) -> Sampler | None:
        return self.get_train_sampler()

    def _mask_generator(self, device: torch.device, training: bool) -> torch.Generator:
        """A generator seeded by (seed, train/eval, step, call within the step, process)."""
        key = (training, self.state.global_step)
        if key != self._mask_key:
            self._mask_key, self._mask_calls = key, 0
        self._mask_calls += 1
        entropy = [
            self.args.seed,
            int(training),
            self.state.global_step,
            self._mask_calls,
            self.args.process_index,
        ]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) >> 1
        return torch.Generator(device=device).manual_seed(seed)

    def _masked(self, inputs: dict, training: bool) -> dict:
        """``inputs`` with masked ``input_ids`` and ``labels``, unless the collator masked them."""
        if LABELS in inputs:
            return inputs
        ids = inputs[INPUT_IDS]
        generator = self._mask_generator(ids.device, training)
        masked, labels = mask_genes(ids, self._special_ids, self._gene_ids, self.mlm_probability, generator)
        return {**inputs, INPUT_IDS: masked, LABELS: labels}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Mask evaluation batches (deterministically) so that the eval loss is computed."""
        return super().prediction_step(model, self._masked(inputs, False), prediction_loss_only, ignore_keys)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Mask the batch (unless done), then the Trainer loss; counts masked tokens predicted right."""
        inputs = self._masked(inputs, model.training)
        labels = inputs[LABELS]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            with torch.no_grad():
                if "predicted" in outputs:  # BertForMaskedGenes: masked positions only
                    predicted, target = outputs["predicted"], labels[labels != IGNORE_INDEX]
                else:
                    predicted, target = outputs["logits"].argmax(-1), labels
                valid = target != IGNORE_INDEX
                self._mlm_hits += int((predicted[valid] == target[valid]).sum())
                self._mlm_total += int(valid.sum())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``mlm_accuracy`` to training logs."""
        if "loss" in logs and self._mlm_total:
            logs["mlm_accuracy"] = round(self._mlm_hits / self._mlm_total, 4)
            self._mlm_hits = self._mlm_total = 0
        super().log(logs, start_time)
