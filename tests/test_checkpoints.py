"""Model folders against their token dictionaries: a dictionary of another size is refused."""

import json

import pytest
from transformers import BertConfig, BertModel

from stformer.checkpoints import open_model_folder


def _folder(path, model_rows: int, dictionary_tokens: int):
    config = BertConfig(
        vocab_size=model_rows, hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    vocab = {"<pad>": 0, "<mask>": 1, **{f"G{i}": i for i in range(2, dictionary_tokens)}}
    (path / "dictionary.json").write_text(json.dumps(vocab))
    return path


@pytest.mark.parametrize(
    ("rows", "tokens", "accepted"),
    [(62, 62, True), (80, 62, False), (50, 62, False), (64, 62, True), (72, 62, False), (128, 70, True)],
)
def test_a_dictionary_of_another_size_than_the_model_is_refused_unless_padding(tmp_path, rows, tokens, accepted):
    # a V1 model (25,426 rows) read with V2's dictionary (20,275 tokens) would embed every id in range: refused;
    # a vocabulary rounded up to a multiple of 8 or 64 (fast kernels) is the one difference allowed
    folder = _folder(tmp_path, rows, tokens)
    if accepted:
        assert len(open_model_folder(folder, folder / "dictionary.json").vocab) == tokens
        return
    with pytest.raises(ValueError, match=rf"dictionary.json has {tokens} tokens but the model .* vocabulary of {rows}"):
        open_model_folder(folder, folder / "dictionary.json")
