"""What fine-tuning is built from: the model with a fresh head, the training arguments, the loss and the collator."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import BertConfig, BertForTokenClassification, TrainingArguments

from .._constants import IGNORE_INDEX, LABEL, LABELS, VOCAB_FILE
from .._files import atomic_path, write_json
from .._hardware import bf16_is_fast
from ..settings import ClassifyConfig
from ..vocab import special_token_ids
from .collators import DataCollatorForCellClassification, DataCollatorForGeneClassification
from .model import BertForCellClassification


def model_builder(config: ClassifyConfig, checkpoint: str, id_class: dict[int, str], tokenizer_vocab: dict[str, int]):
    """A function building the model with a fresh head (Ray Tune calls it once per trial)."""
    labels = {"num_labels": max(id_class) + 1, "id2label": {i: c for i, c in id_class.items()}}
    labels["label2id"] = {c: i for i, c in labels["id2label"].items()}

    def build():
        model_config = BertConfig.from_pretrained(str(checkpoint), **labels)
        model_config.special_token_ids = special_token_ids(tokenizer_vocab)  # left out of the mean over genes
        if config.classifier_type == "sequence":
            model_config.cell_pooling, model_config.gene_dropout = config.pooling, config.gene_dropout
            model = BertForCellClassification.from_pretrained(str(checkpoint), config=model_config)
        else:
            model = BertForTokenClassification.from_pretrained(str(checkpoint), config=model_config)
        for layer in model.bert.encoder.layer[: config.freeze_layers]:
            for parameter in layer.parameters():
                parameter.requires_grad = False
        return model

    return build


def training_arguments(config: ClassifyConfig, output_dir: Path, n_train: int, overrides: dict) -> TrainingArguments:
    """The Trainer's arguments: the preset's and stformer's defaults, then ``training_args``, then ``overrides``."""
    batch = config.training_args.get("per_device_train_batch_size", 12)
    preset = config.preset_values()
    defaults = {
        "output_dir": str(output_dir),
        "num_train_epochs": preset["num_train_epochs"],
        "learning_rate": preset["learning_rate"],
        "lr_scheduler_type": "linear",
        "warmup_steps": math.ceil(0.1 * math.ceil(n_train / batch)),
        "weight_decay": 0.001,
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": config.forward_batch_size,
        "eval_strategy": "epoch",  # logged only: the held-out set never picks the model
        "save_strategy": "no",
        "logging_steps": 10,
        "report_to": "none",
        "train_sampling_strategy": "group_by_length",
        "seed": config.seed,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": bf16_is_fast(),
        "disable_tqdm": False,
    }
    return TrainingArguments(**{**defaults, **config.training_args, **overrides})


def weighted_loss(config: ClassifyConfig, train_data: Dataset, n_classes: int):
    """Cross-entropy weighted by inverse class frequency (``class_weights=True``)."""
    column = LABEL if config.classifier_type == "sequence" else LABELS
    values = np.asarray(train_data[column] if column == LABEL else [v for r in train_data[column] for v in r])
    counts = np.bincount(values[values != IGNORE_INDEX], minlength=n_classes).astype(float)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / n_classes, dtype=torch.float)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            weight=weights.to(logits.device),
            ignore_index=IGNORE_INDEX,
        )

    return loss


def classification_collator(tokenizer, classifier_type: str):
    """The collator for cells or genes, padding each batch to its longest example."""
    if classifier_type == "sequence":
        return DataCollatorForCellClassification(tokenizer, padding="longest", max_length=None)
    return DataCollatorForGeneClassification(tokenizer, padding="longest")


def load_classifier(model_directory: str | Path, classifier_type: str):
    """Load a fine-tuned cell (sequence) or gene (token) classifier."""
    cls = BertForCellClassification if classifier_type == "sequence" else BertForTokenClassification
    return cls.from_pretrained(str(model_directory))


def save_classifier(trainer, model_dir: Path, id_class: dict[int, str], vocab: dict[str, int] | None) -> None:
    """The fine-tuned model (safetensors, tokenizer, ``id_class_dict.json``, the dictionary), atomically."""
    with atomic_path(model_dir, overwrite=True) as tmp:
        trainer.save_model(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)
        write_json({str(i): c for i, c in id_class.items()}, tmp / "id_class_dict.json")
        if vocab is not None:
            write_json(vocab, tmp / VOCAB_FILE)
    shutil.rmtree(model_dir.parent / "checkpoints", ignore_errors=True)
