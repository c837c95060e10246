"""The classifier's Trainer and the one way every inference path runs it."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments

from .._datasets import example_lengths
from .._hardware import bf16_is_fast
from .._kernels import FastKernelsTrainer
from .._sampling import LengthGroupedSampler


class ClassifierTrainer(FastKernelsTrainer):
    """``Trainer`` that evaluates and predicts in dataset order (no shuffled length grouping).

    Training with ``train_sampling_strategy="group_by_length"`` batches cells of similar length
    (:class:`~stformer._sampling.LengthGroupedSampler`, small datasets included). Evaluation runs
    under bf16 autocast when training does (the Trainer alone evaluates in fp32). Every loss here
    (the model's, or the class-weighted one) is a mean over its batch, so gradient accumulation
    divides it by the number of accumulated batches.
    """

    loss_is_scaled_for_ga = False

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(example_lengths(dataset), batch, self.args.seed)

    def _get_eval_sampler(self, eval_dataset):
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer's prediction step, under bf16 autocast when ``args.bf16``."""
        device = "cuda" if self.args.device.type == "cuda" else "cpu"
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.args.bf16):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def inference_arguments(output_dir: str, batch_size: int, *, num_workers: int = 0) -> TrainingArguments:
    """``TrainingArguments`` of every inference path (evaluation, prediction): one precision rule.

    bf16 autocast where the hardware is fast at it (as in training), else fp32; the GPU when
    there is one.
    """
    return TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        dataloader_num_workers=num_workers,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16_is_fast(),
        disable_tqdm=True,
    )


def predict_in_length_order(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and labels for ``dataset`` in its own order, batching cells of similar length.

    Examples are predicted sorted by length (little padding) and put back in order. Per-token
    outputs of all batches share one width (the Trainer pads them with -100).
    """
    order = np.argsort(-example_lengths(dataset), kind="stable")
    output = trainer.predict(dataset.select(order))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    logits = np.asarray(output.predictions)[inverse]  # (n, k) or (n, longest, k) padded with -100
    labels = None if output.label_ids is None else np.asarray(output.label_ids)[inverse]
    return logits, labels
