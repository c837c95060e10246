import pickle

import pytest
import torch

from stformer import choose_closest, load_example_lengths, make_output_dirs, setup_environment
from stformer._warnings import StformerWarning
from stformer.pretrain.setup import check_deepspeed_config


def test_setup_environment_reproducible():
    setup_environment(7)
    a = torch.rand(3)
    setup_environment(7)
    assert torch.equal(a, torch.rand(3))


def test_make_output_dirs(tmp_path):
    dirs = make_output_dirs(tmp_path, "run1")
    assert set(dirs) == {"training", "logging", "model"}
    assert all(p.is_dir() and p.parent == tmp_path / "run1" for p in dirs.values())
    with pytest.raises(ValueError, match="plain folder name"):
        make_output_dirs(tmp_path, "../escape")


def test_choose_closest():
    assert choose_closest("adamw", ["AdamW", "Lamb"]) == "AdamW"
    assert choose_closest("Adamw_torch", ["adamw_torch", "sgd"]) == "adamw_torch"
    assert choose_closest("lam", ["AdamW", "Lamb"]) == "Lamb"
    with pytest.raises(ValueError, match="not supported"):
        choose_closest("sgd", ["AdamW"], unsupported=["SGD"])
    with pytest.raises(ValueError, match="not a known option"):
        choose_closest("zzzz", ["AdamW", "Lamb"])


def test_deepspeed_names_checked():
    with pytest.warns(StformerWarning, match="'Adamw' read as 'AdamW'"):
        fixed = check_deepspeed_config({"optimizer": {"type": "Adamw"}, "scheduler": {"type": "WarmupLR"}})
    assert fixed["optimizer"]["type"] == "AdamW"
    with pytest.raises(ValueError, match="not a known option"):
        check_deepspeed_config({"scheduler": {"type": "Cosine annealing with restarts"}})


def test_load_example_lengths(tmp_path):
    good, bad = tmp_path / "good.pkl", tmp_path / "bad.pkl"
    good.write_bytes(pickle.dumps([3, 1, 2]))
    bad.write_bytes(pickle.dumps({"a": 1}))
    assert load_example_lengths(good) == [3, 1, 2]
    with pytest.raises(ValueError, match="bad.pkl: expected a list"):
        load_example_lengths(bad)
