import json

import pytest
from datasets import load_from_disk
from synthetic import make_adata

from stformer.cli import main


def test_cli_pipeline_and_errors(tmp_path, capsys):
    adata = make_adata(50, 40, expressed=10, n_samples=2)
    adata.write_h5ad(tmp_path / "a.h5ad")
    med, voc, out = tmp_path / "m.json", tmp_path / "v.pkl", tmp_path / "tok"
    assert main(["medians", str(tmp_path), "--out", str(med), "--method", "exact", "--quiet"]) == 0
    assert main(["vocab", "--medians", str(med), "--out", str(voc)]) == 0
    args = [
        "tokenize",
        str(tmp_path / "a.h5ad"),
        "--medians",
        str(med),
        "--vocab",
        str(voc),
        "--out",
        str(out),
        "--mode",
        "neighborhood",
        "--max-length",
        "30",
        "--sample-column",
        "sample",
        "--metadata-columns",
        "cell_type=label",
        "--quiet",
    ]
    assert main(args) == 0
    ds = load_from_disk(str(out))
    assert set(ds.column_names) == {"input_ids", "length", "neighbor_start", "cell_id", "obs_name", "label"}
    assert max(ds["length"]) <= 30
    assert json.loads((out / "vocab.json").read_text())["<pad>"] == 0
    capsys.readouterr()
    assert main(args) == 1
    assert "tok already exists" in capsys.readouterr().err
    assert main(["medians", str(tmp_path / "x.h5ad"), "--out", str(med)]) == 1
    assert "x.h5ad: file not found" in capsys.readouterr().err


def test_user_errors_print_one_line_and_bugs_show_their_traceback(tmp_path, capsys, monkeypatch):
    (tmp_path / "cut.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # an HDF5 signature, then nothing
    assert main(["medians", str(tmp_path / "cut.h5ad"), "--out", str(tmp_path / "m.json"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.h5ad: not a readable h5ad (HDF5) file" in err and "Traceback" not in err

    def broken(*args, **kwargs):
        raise ValueError("an internal mistake")  # a plain ValueError is not a user error

    monkeypatch.setattr("stformer.tokenize.compute_gene_medians", broken)
    make_adata(10, 20, expressed=5).write_h5ad(tmp_path / "a.h5ad")
    assert main(["medians", str(tmp_path / "a.h5ad"), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: an internal mistake" in err and "please report it" in err


@pytest.mark.parametrize(
    "command",
    [["medians"], ["vocab"], ["tokenize"], ["pretrain"], ["classify", "train"], ["embed"], ["perturb"], ["run"]],
)
def test_every_command_explains_its_options(command, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main([*command, "--help"])
    assert exit_code.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: stformer" in shown and "--" in shown
    if command == ["pretrain"]:
        assert "(80% <mask>, 10% random" in shown  # a % in a field's comment


def test_every_command_takes_quiet_and_every_option_says_what_it_does():
    from stformer.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        options = {o for action in command._actions for o in action.option_strings}
        assert "--quiet" in options, name
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                words = (action.help or "").split(" (default:")[0].strip()
                assert len(words) > 3, f"stformer {name} {action.option_strings[0]} has no help"
