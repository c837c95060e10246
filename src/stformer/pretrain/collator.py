"""Token-dictionary "tokenizer" and the masked-gene collator used for pretraining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import BatchEncoding

from .._constants import IGNORE_INDEX, INPUT_IDS, LABELS, MASK_TOKEN, PAD_TOKEN
from .._datasets import pad_right
from .._errors import InputError
from ..vocab import special_token_ids, validate_token_dictionary


class STFormerPreCollator:
    """Tokenizer-like view of a token dictionary: ids, padding and special-token masks.

    Provides what ``transformers.SpecialTokensMixin`` provided (removed in transformers 5):
    ``pad_token``/``mask_token`` and their ids, ``all_special_tokens``/``all_special_ids``.

    >>> c = STFormerPreCollator({"<pad>": 0, "<mask>": 1, "G1": 2, "G2": 3})
    >>> c.pad([{"input_ids": [2, 3]}, {"input_ids": [3]}], return_tensors="pt")["input_ids"]
    tensor([[2, 3],
            [3, 0]])
    """

    model_input_names = (INPUT_IDS, "attention_mask")
    padding_side = "right"

    def __init__(self, token_dict: Mapping[str, int]):
        self.token_dict = validate_token_dictionary(token_dict)
        self.id_to_token = {i: t for t, i in self.token_dict.items()}
        self.pad_token, self.mask_token = PAD_TOKEN, MASK_TOKEN
        self.pad_token_id = self.token_dict[PAD_TOKEN]
        self.mask_token_id = self.token_dict[MASK_TOKEN]
        self.all_special_ids = special_token_ids(self.token_dict)  # [pad, mask, and <cls>/<eos>... if present]
        self.all_special_tokens = [self.id_to_token[i] for i in self.all_special_ids]

    def __len__(self) -> int:
        return len(self.token_dict)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Token string(s) to id(s); ``None`` for tokens not in the dictionary."""
        if isinstance(tokens, str):
            return self.token_dict.get(tokens)
        return [self.token_dict.get(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | None | list[str | None]:
        """Id(s) to token string(s); ``None`` for unknown ids."""
        if isinstance(ids, int):
            return self.id_to_token.get(ids)
        return [self.id_to_token.get(int(i)) for i in ids]

    def __call__(self, examples: Sequence[Mapping[str, Sequence[int]]]) -> BatchEncoding:
        """Collect the ``input_ids`` of examples into a batch (unpadded lists; no masking)."""
        return BatchEncoding({INPUT_IDS: [list(e[INPUT_IDS]) for e in examples]})

    def pad(
        self,
        encoded_inputs: Sequence[Mapping[str, Sequence[int]]] | Mapping[str, Sequence],
        padding: bool | str = True,
        max_length: int | None = None,
        return_tensors: str | None = None,
        pad_to_multiple_of: int | None = None,
        **kwargs,
    ) -> BatchEncoding:
        """Pad (right) or truncate ``input_ids`` to one length and add ``attention_mask``.

        The length is ``max_length`` when given (longer sequences are truncated), else the
        longest sequence in the batch, rounded up to ``pad_to_multiple_of``. ``padding=False``
        or ``"do_not_pad"`` returns lists unchanged (truncated to ``max_length``).
        """
        if isinstance(encoded_inputs, Mapping):
            sequences = list(encoded_inputs[INPUT_IDS])
        else:
            sequences = [e[INPUT_IDS] for e in encoded_inputs]
        sequences = [list(s)[:max_length] if max_length else list(s) for s in sequences]
        if padding in (False, "do_not_pad"):
            batch = {INPUT_IDS: sequences, "attention_mask": [[1] * len(s) for s in sequences]}
            return BatchEncoding(batch, tensor_type=return_tensors)
        target = max_length or max((len(s) for s in sequences), default=0)
        if pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        ids, mask = pad_right(sequences, self.pad_token_id, target)
        if return_tensors == "pt":
            return BatchEncoding({INPUT_IDS: ids, "attention_mask": mask})
        return BatchEncoding({INPUT_IDS: ids.tolist(), "attention_mask": mask.tolist()})

    def get_special_tokens_mask(
        self,
        token_ids_0: Sequence[int],
        token_ids_1: Sequence[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where a token is special (``<pad>``, ``<mask>``, and ``<cls>``/``<eos>`` of V2 cells), else 0.

        Special tokens are already in the sequences, so ``already_has_special_tokens`` does not
        change the result; it is accepted for compatibility with Hugging Face callers.
        """
        special = set(self.all_special_ids)
        ids = list(token_ids_0) + list(token_ids_1 or [])
        return [1 if int(t) in special else 0 for t in ids]


def mask_genes(
    input_ids: torch.Tensor,
    special_ids: torch.Tensor,
    gene_ids: torch.Tensor,
    mlm_probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a padded batch; returns ``(masked input_ids, labels)``, both (batch, seq).

    ``mlm_probability`` of the non-special tokens are chosen; of those 80% become ``<mask>``,
    10% a random gene from ``gene_ids`` and 10% stay. ``labels`` hold the original ids at chosen
    positions and -100 elsewhere. ``special_ids`` = [pad, mask, ...]; the mask id is ``special_ids[1]``.
    """
    device = input_ids.device

    def draw(p: float) -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device) < p

    labels = input_ids.clone()
    chosen = draw(mlm_probability) & ~torch.isin(input_ids, special_ids.to(device))
    labels[~chosen] = IGNORE_INDEX
    masked = input_ids.clone()
    to_mask = draw(0.8) & chosen
    masked[to_mask] = special_ids[1].item()
    to_random = draw(0.5) & chosen & ~to_mask
    picks = torch.randint(len(gene_ids), (int(to_random.sum()),), generator=generator, device=device)
    masked[to_random] = gene_ids.to(device)[picks]
    return masked, labels


@dataclass
class DataCollatorForMaskedGenes:
    """Pad a batch and mask genes as BERT does (:func:`mask_genes`), with the global torch RNG.

    ``STFormerPretrainer`` itself pads in its collator and masks in ``compute_loss`` with a
    generator seeded by (seed, step), so that a resumed run repeats the masks exactly; use this
    collator with a plain ``Trainer``.

    Returns ``input_ids``, ``attention_mask`` and ``labels``, each (batch, longest).
    """

    tokenizer: STFormerPreCollator
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.mlm_probability < 1:
            msg = f"mlm_probability must lie in (0, 1), got {self.mlm_probability}"
            raise InputError(msg)
        self.special_ids, self.gene_ids = special_and_gene_ids(self.tokenizer)

    def __call__(self, examples: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        """Pad ``examples`` and mask them; see the class docstring."""
        batch = self.tokenizer.pad(
            [{INPUT_IDS: e[INPUT_IDS]} for e in examples],
            return_tensors="pt",
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        input_ids, labels = mask_genes(batch[INPUT_IDS], self.special_ids, self.gene_ids, self.mlm_probability)
        return {INPUT_IDS: input_ids, "attention_mask": batch["attention_mask"], LABELS: labels}


def special_and_gene_ids(tokenizer: STFormerPreCollator) -> tuple[torch.Tensor, torch.Tensor]:
    """(special ids [pad, mask], every other id) as tensors, for :func:`mask_genes`."""
    special = tokenizer.all_special_ids
    genes = sorted(i for i in tokenizer.token_dict.values() if i not in set(special))
    return torch.tensor(special), torch.tensor(genes)
