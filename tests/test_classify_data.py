import numpy as np
import pytest
import torch
from datasets import Dataset

from stformer import (
    DataCollatorForCellClassification,
    DataCollatorForGeneClassification,
    build_custom_tokenizer,
    downsample_and_shuffle,
    flatten_list,
    label_classes,
    load_and_filter,
    remove_rare,
    rename_cols,
    save_token_dictionary,
    subsample_by_class,
)

VOCAB = {"<pad>": 0, "<mask>": 1, "A": 2, "B": 3, "C": 4, "D": 5}


def _cells():
    return Dataset.from_dict(
        {
            "input_ids": [[2, 3], [4], [5, 2, 3], [3, 4], [2], [5, 4]],
            "cell_type": ["T", "T", "B", "NK", "T", "B"],
            "donor": ["d1", "d2", "d1", "d1", "d2", "d2"],
        }
    )


def test_load_and_filter(tmp_path):
    data = _cells()
    data.save_to_disk(str(tmp_path / "ds"))
    kept = load_and_filter({"donor": "d1", "cell_type": ["T", "B"]}, 1, str(tmp_path / "ds"))
    assert kept["cell_type"] == ["T", "B"]
    assert len(load_and_filter(None, 1, data)) == 6
    with pytest.raises(KeyError, match="no column 'tissue'"):
        load_and_filter({"tissue": "x"}, 1, data)
    with pytest.raises(ValueError, match="no examples left"):
        load_and_filter({"donor": "d9"}, 1, data)
    numbered = data.add_column("cluster", [3, 7, 3, 7, 11, 3])
    assert load_and_filter({"cluster": "3"}, 1, numbered)["cluster"] == [3, 3, 3]  # a command line's "3" is 3
    assert load_and_filter({"cluster": [7, 11]}, 1, numbered)["cluster"] == [7, 7, 11]


def test_remove_rare():
    kept = remove_rare(_cells(), 0.2, "cell_type", 1)  # NK is 1/6 < 0.2
    assert sorted(set(kept["cell_type"])) == ["B", "T"] and len(kept) == 5
    assert len(remove_rare(_cells(), 0.0, "cell_type", 1)) == 6


def test_subsample_and_downsample():
    labels = ["a"] * 10 + ["b"] * 3
    chosen = subsample_by_class(labels, 4)
    assert sum(labels[i] == "a" for i in chosen) == 4 and sum(labels[i] == "b" for i in chosen) == 3
    assert chosen == subsample_by_class(labels, 4)  # seeded
    data = _cells()
    assert len(downsample_and_shuffle(data, 4, None, {"state_key": "cell_type"})) == 4
    per_class = downsample_and_shuffle(data, None, 1, {"state_key": "cell_type"})
    assert sorted(per_class["cell_type"]) == ["B", "NK", "T"]


def test_rename_flatten_and_cell_labels():
    data = rename_cols(_cells(), "cell_type")
    assert "label" in data.column_names and "cell_type" not in data.column_names
    assert flatten_list([[1, 2], [], [3]]) == [1, 2, 3]
    labeled, class_to_id = label_classes("cell", data, None, None, 1)
    assert class_to_id == {"B": 0, "NK": 1, "T": 2}
    assert labeled["label"] == [2, 2, 0, 1, 2, 0]


def test_gene_labels(tmp_path):
    path = save_token_dictionary(VOCAB, tmp_path / "vocab.pkl")
    data = Dataset.from_dict({"input_ids": [[2, 3], [4], [5, 2]]})
    labeled, class_to_id = label_classes("gene", data, {"tf": ["A"], "kinase": ["D", "ZZZ"]}, str(path), 1)
    assert class_to_id == {"kinase": 0, "tf": 1}
    assert labeled["labels"] == [[1, -100], [0, 1]]  # the cell with gene C only is dropped
    with pytest.raises(ValueError, match="more than one class"):
        label_classes("gene", data, {"x": ["A"], "y": ["A"]}, str(path), 1)


def test_cell_collator_pads_and_stacks_labels():
    tok = build_custom_tokenizer(VOCAB)
    features = [{"input_ids": [2, 3, 4], "label": 1, "cell_type": "T"}, {"input_ids": [5], "label": 0}]
    longest = DataCollatorForCellClassification(tok, padding="longest", max_length=None)(features)
    assert longest["input_ids"].tolist() == [[2, 3, 4], [5, 0, 0]]
    assert longest["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert longest["labels"].tolist() == [1, 0]
    fixed = DataCollatorForCellClassification(tok, max_length=4)(features)  # spec default: max_length
    assert fixed["input_ids"].shape == (2, 4)
    truncated = DataCollatorForCellClassification(tok, max_length=2)(features)
    assert truncated["input_ids"].tolist() == [[2, 3], [5, 0]]


def test_gene_collator_pads_labels_with_ignore_index():
    tok = build_custom_tokenizer(VOCAB)
    batch = DataCollatorForGeneClassification(tok)(
        [{"input_ids": [2, 3], "labels": [1, -100]}, {"input_ids": [4, 5, 2], "labels": [0, 0, 1]}]
    )
    assert batch["labels"].tolist() == [[1, -100, -100], [0, 0, 1]]
    assert batch["input_ids"].tolist() == [[2, 3, 0], [4, 5, 2]]
    assert isinstance(batch["labels"], torch.Tensor) and np.all(batch["attention_mask"].numpy()[0] == [1, 1, 0])
