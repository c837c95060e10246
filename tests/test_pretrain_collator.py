import pytest
import torch

from stformer import DataCollatorForMaskedGenes, STFormerPreCollator

VOCAB = {"<pad>": 0, "<mask>": 1, **{f"G{i}": i + 2 for i in range(50)}}


def test_precollator_token_api():
    c = STFormerPreCollator(VOCAB)
    assert len(c) == 52
    assert c.convert_tokens_to_ids("G3") == 5
    assert c.convert_tokens_to_ids(["G0", "nope"]) == [2, None]
    assert c.convert_ids_to_tokens(5) == "G3"
    assert c.convert_ids_to_tokens([2, 999]) == ["G0", None]
    assert c.get_special_tokens_mask([5, 0, 1, 7]) == [0, 1, 1, 0]
    assert c.get_special_tokens_mask([5], [0], already_has_special_tokens=True) == [0, 1]
    assert c([{"input_ids": [3, 4], "length": 2}])["input_ids"] == [[3, 4]]


def test_precollator_pad_and_truncate():
    c = STFormerPreCollator(VOCAB)
    batch = c.pad([{"input_ids": [3, 4, 5]}, {"input_ids": [6]}], return_tensors="pt")
    assert batch["input_ids"].tolist() == [[3, 4, 5], [6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    short = c.pad({"input_ids": [[3, 4, 5], [6]]}, max_length=2)
    assert short["input_ids"] == [[3, 4], [6, 0]] and short["attention_mask"] == [[1, 1], [1, 0]]
    assert c.pad([{"input_ids": [3]}], pad_to_multiple_of=4)["input_ids"] == [[3, 0, 0, 0]]
    assert c.pad([{"input_ids": [3]}, {"input_ids": [4, 5]}], padding=False)["input_ids"] == [[3], [4, 5]]


def test_precollator_needs_special_tokens():
    with pytest.raises(ValueError, match="<mask>"):
        STFormerPreCollator({"<pad>": 0, "G": 1})


def test_masking_follows_bert_proportions():
    torch.manual_seed(0)
    c = STFormerPreCollator(VOCAB)
    collate = DataCollatorForMaskedGenes(c, mlm_probability=0.15)
    gen = torch.Generator().manual_seed(1)
    examples = [
        {"input_ids": torch.randint(2, 52, (int(n),), generator=gen).tolist()}
        for n in torch.randint(50, 400, (400,), generator=gen)
    ]
    batch = collate(examples)
    original = c.pad(examples, return_tensors="pt")["input_ids"]
    real = batch["attention_mask"].bool()
    chosen = batch["labels"] != -100
    assert not chosen[~real].any()  # padding never masked
    assert (batch["input_ids"][~real] == 0).all()
    assert torch.equal(batch["labels"][chosen], original[chosen])
    n_real, n_chosen = int(real.sum()), int(chosen.sum())
    assert abs(n_chosen / n_real - 0.15) < 0.01
    inputs = batch["input_ids"][chosen]
    masked = (inputs == 1).float().mean()
    unchanged = (inputs == original[chosen]).float().mean()
    assert abs(masked - 0.8) < 0.02
    # 10% kept, plus random replacements that happen to draw the same gene (1/50 of 10%)
    assert abs(unchanged - (0.1 + 0.1 / 50)) < 0.015
    replaced = inputs[(inputs != 1) & (inputs != original[chosen])]
    assert replaced.numel() > 0 and (replaced >= 2).all()  # random tokens are genes, never special
    assert not ((batch["input_ids"] != original) & ~chosen).any()


def test_mlm_probability_checked():
    with pytest.raises(ValueError, match="mlm_probability"):
        DataCollatorForMaskedGenes(STFormerPreCollator(VOCAB), mlm_probability=1.5)
