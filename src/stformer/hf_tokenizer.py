"""A Hugging Face tokenizer over a gene vocabulary, for ``AutoTokenizer.from_pretrained``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ._constants import INPUT_IDS, MASK_TOKEN, PAD_TOKEN
from ._errors import InputError
from .vocab import load_token_dictionary, validate_token_dictionary

EXTRA_SPECIAL_TOKENS = ("<unk>", "<cls>", "<sep>")


def build_custom_tokenizer(
    token_dict_path: str | Path | Mapping[str, int],
    pad_token: str = PAD_TOKEN,
    mask_token: str = MASK_TOKEN,
    *,
    model_max_length: int | None = None,
):
    """Build a ``PreTrainedTokenizerFast`` from a vocabulary file (JSON or restricted pickle).

    Gene tokens keep their ids. ``<unk>``, ``<cls>`` and ``<sep>`` are special tokens as well;
    when the vocabulary lacks them they get the ids after the last gene (token datasets never
    contain them, so the model's embedding size stays ``len(vocabulary)``). ``model_max_length``
    records the model's longest input (its position embeddings) in the saved tokenizer.

    >>> tok = build_custom_tokenizer("vocab.json")  # doctest: +SKIP
    >>> tok.save_pretrained("model_dir")  # doctest: +SKIP
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(token_dict_path, Mapping):
        vocab = validate_token_dictionary(token_dict_path)
    else:
        vocab = load_token_dictionary(token_dict_path)
    for token in (pad_token, mask_token):
        if token not in vocab:
            msg = f"special token {token!r} is not in the vocabulary {token_dict_path}"
            raise InputError(msg)
    vocab = dict(vocab)
    for token in EXTRA_SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad_token,
        mask_token=mask_token,
        unk_token="<unk>",
        cls_token="<cls>",
        sep_token="<sep>",
        model_input_names=[INPUT_IDS, "attention_mask"],
        **({"model_max_length": model_max_length} if model_max_length else {}),
    )
