import pickle

import pytest

from stformer import (
    build_token_dictionary,
    load_token_dictionary,
    save_token_dictionary,
    validate_token_dictionary,
)


def test_build_puts_special_tokens_first_and_sorts_genes():
    vocab = build_token_dictionary({"G2": 1.0, "G1": 3.0, "G3": 0.5})
    assert vocab == {"<pad>": 0, "<mask>": 1, "G1": 2, "G2": 3, "G3": 4}


@pytest.mark.parametrize("suffix", [".json", ".pkl"])
def test_round_trip(tmp_path, suffix):
    vocab = build_token_dictionary({"A": 1.0, "B": 2.0})
    path = save_token_dictionary(vocab, tmp_path / f"vocab{suffix}")
    assert load_token_dictionary(path) == vocab
    if suffix == ".pkl":  # readable by tools that expect the specification's pickles
        assert pickle.loads(path.read_bytes()) == vocab


@pytest.mark.parametrize(
    ("vocab", "match"),
    [
        ({"<mask>": 0, "A": 1}, r"special token\(s\) \['<pad>'\] missing"),
        ({"<pad>": 0, "<mask>": 1, "A": 1}, "duplicated ids \\[1\\]"),
        ({"<pad>": 0, "<mask>": 1, "A": 5}, "dense"),
        ({"<pad>": -1, "<mask>": 0, "A": 1}, "non-negative"),
        ({"<pad>": 0, "<mask>": 1, "A": "2"}, "ids integers"),
        ({}, "non-empty"),
    ],
)
def test_validation_errors(vocab, match):
    with pytest.raises(ValueError, match=match):
        validate_token_dictionary(vocab)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "v.json"
    path.write_text('{"A": 0}')
    with pytest.raises(ValueError, match="v.json: special token"):
        load_token_dictionary(path)
