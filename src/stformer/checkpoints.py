"""Model folders from stformer or from elsewhere: a Hugging Face BERT folder (``config.json`` + weights).

A Geneformer-format checkpoint is such a folder (``BertForMaskedLM.save_pretrained``), with its
token dictionary given separately. Every stage that reads a model checks it against the
dictionary and the data here, before any work.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from ._constants import END_TOKENS, INPUT_IDS, LENGTH, PAD_TOKEN, VOCAB_FILE
from ._datasets import example_lengths, token_id_range
from ._errors import InputError
from ._warnings import StformerWarning
from .vocab import load_token_dictionary

VOCAB_PADDINGS = (8, 64)  # a model's vocabulary may be its dictionary rounded up to a multiple of these
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ModelFolder:
    """A model folder, its configuration and the token dictionary it reads."""

    path: Path
    config: object  # transformers.PretrainedConfig
    vocab: dict[str, int] | None  # None only when opened with required=False and no dictionary was found

    @property
    def max_length(self) -> int:
        """The longest cell the model reads (its position embeddings)."""
        return int(self.config.max_position_embeddings)


def open_model_folder(
    path: str | Path,
    token_dictionary: str | Path | Mapping | None = None,
    *,
    tokens: str | Path | None = None,
    required: bool = True,
) -> ModelFolder:
    """Open ``path`` (``config.json`` and weights) with its token dictionary, and check that they agree.

    The dictionary is ``token_dictionary`` when given, else the folder's ``vocab.json`` (stformer
    writes one; a Geneformer checkpoint has none), else the ``vocab.json`` of the token dataset
    ``tokens``. One-line errors name both values: a dictionary of another size than the model's
    vocabulary (the model may only round its vocabulary up to a multiple of 8 or 64, padding
    for fast kernels), another ``<pad>`` id than the model's, or a token dataset made with
    another dictionary. With ``required=False`` a folder without any dictionary opens with ``vocab=None``
    (a fine-tuned classifier saved by other tools carries only its tokenizer).

    >>> folder = open_model_folder("gf-6L-30M", "token_dictionary.pkl")  # doctest: +SKIP
    >>> folder.max_length  # doctest: +SKIP
    2048
    """
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        msg = f"{path}: no config.json; a model folder holds config.json and its weights (save_pretrained writes both)"
        raise InputError(msg)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        msg = f"{path}: no weights ({' or '.join(WEIGHT_FILES[:2])}); copy the model's weight file next to config.json"
        raise InputError(msg)
    data_vocab = Path(tokens) / VOCAB_FILE if tokens is not None and (Path(tokens) / VOCAB_FILE).is_file() else None
    source = token_dictionary or (path / VOCAB_FILE if (path / VOCAB_FILE).is_file() else data_vocab)
    if source is None and not required:
        return ModelFolder(path, AutoConfig.from_pretrained(str(path), local_files_only=True), None)
    if source is None:
        msg = (
            f"{path} holds no {VOCAB_FILE}: give the token dictionary the model was trained with "
            "(--token-dictionary FILE; token_dictionary in a run config)"
        )
        raise InputError(msg)
    vocab = dict(source) if isinstance(source, Mapping) else load_token_dictionary(source)
    name = "the given dictionary" if isinstance(source, Mapping) else str(source)
    if data_vocab is not None and data_vocab != source and load_token_dictionary(data_vocab) != vocab:
        msg = f"{tokens} was tokenized with another dictionary than the model's ({name}); tokenize with the model's"
        raise InputError(msg)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if len(vocab) != config.vocab_size and not _padded(len(vocab), config.vocab_size):
        msg = (
            f"{name} has {len(vocab):,} tokens but the model {path} has a vocabulary of {config.vocab_size:,}: "
            "this is not the dictionary the model was trained with (give the model's own token dictionary)"
        )
        raise InputError(msg)
    if config.pad_token_id is not None and vocab[PAD_TOKEN] != config.pad_token_id:
        msg = f"{name} has {PAD_TOKEN}={vocab[PAD_TOKEN]} but the model {path} pads with id {config.pad_token_id}"
        raise InputError(msg)
    return ModelFolder(path, config, vocab)


def _padded(tokens: int, rows: int) -> bool:
    """Whether ``rows`` is ``tokens`` rounded up to a multiple of 8 or 64, a vocabulary padded for fast kernels."""
    return rows > tokens and any(rows == -(-tokens // m) * m for m in VOCAB_PADDINGS)


def save_model_folder(model, path: Path, vocab: Mapping[str, int]) -> None:
    """Write ``model`` (safetensors, ``config.json``) with its dictionary and tokenizer: a folder every stage opens."""
    from ._files import write_json
    from .hf_tokenizer import build_custom_tokenizer

    model.save_pretrained(path)
    write_json(dict(vocab), path / VOCAB_FILE)
    build_custom_tokenizer(dict(vocab), model_max_length=int(model.config.max_position_embeddings)).save_pretrained(
        path
    )


def load_encoder(folder: ModelFolder):
    """The folder's BERT encoder in eval mode; a masked-LM or classifier head, if any, is left out quietly."""
    from transformers import BertModel
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # not the load report of the head's weights left out: that is intended
    try:
        return BertModel.from_pretrained(str(folder.path), add_pooling_layer=False).eval()
    finally:
        logging.set_verbosity(verbosity)


def fit_to_model(data: Dataset, folder: ModelFolder, *, source: str = "the token dataset") -> Dataset:
    """``data`` checked against the model: its token ids within the vocabulary, its cells within the positions.

    Cells longer than ``folder.max_length`` keep their highest-ranked genes (and a final
    ``<eos>``), with a warning that counts them.
    """
    high = (token_id_range(data) or (0, -1))[1]
    if high >= folder.config.vocab_size:
        msg = (
            f"{source} holds token id {high} but the model {folder.path} has a vocabulary of "
            f"{folder.config.vocab_size:,}: the data were tokenized with another vocabulary than the model's"
        )
        raise InputError(msg)
    limit = folder.max_length
    too_long = int((example_lengths(data) > limit).sum())
    if not too_long:
        return data
    warnings.warn(
        f"{too_long:,} of {len(data):,} cells of {source} have more than {limit:,} tokens, the most the model "
        f"{folder.path} reads; their lowest-ranked genes are cut",
        StformerWarning,
        stacklevel=2,
    )
    ends = {folder.vocab[t] for t in END_TOKENS if t in (folder.vocab or {})}

    def cut(batch: dict) -> dict:
        ids = [row if len(row) <= limit else row[: limit - 1] + row[-1:] if row[-1] in ends else row[:limit]
               for row in batch[INPUT_IDS]]  # fmt: skip
        return {INPUT_IDS: ids, **({LENGTH: [len(row) for row in ids]} if LENGTH in batch else {})}

    return data.map(cut, batched=True, desc="truncate to the model's length")
