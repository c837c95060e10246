import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from synthetic import make_adata

from stformer._config import add_dataclass_options, build_config, config_from_cli
from stformer._errors import InputError
from stformer.cli import build_parser, main
from stformer.settings import ClassifyConfig, EmbedConfig, RunConfig


@dataclass
class _Extended(EmbedConfig):
    pooling_power: float = 1.0  # a new option, for this test


def test_a_new_field_reaches_the_api_the_cli_and_a_run_config(monkeypatch):
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, _Extended)
    shown = " ".join(parser.format_help().split())
    assert "--pooling-power X a new option, for this test (default: 1.0)" in shown
    config = config_from_cli(_Extended, parser.parse_args(["--pooling-power", "2.5", "--genes"]))
    assert (config.pooling_power, config.genes, config.hidden_layer) == (2.5, True, -1)
    assert build_config(_Extended, {"pooling_power": 3}).pooling_power == 3
    with pytest.raises(ValueError, match="unknown option 'pooling_powr' .*did you mean 'pooling_power'"):
        build_config(_Extended, {"pooling_powr": 3})
    monkeypatch.setitem(RunConfig.SECTIONS, "embed", _Extended)
    run = RunConfig.from_dict(
        {"data": ["a.h5ad"], "output_dir": "o", "label_column": "c", "embed": {"pooling_power": 2}}
    )
    assert run.embed.pooling_power == 2


def test_every_command_offers_every_field_of_its_settings():
    from dataclasses import fields

    from stformer.settings import ClassifyConfig, MediansConfig, PerturbConfig, PretrainConfig, TokenizerConfig

    commands = {
        "medians": MediansConfig,
        "tokenize": TokenizerConfig,
        "pretrain": PretrainConfig,
        "classify": ClassifyConfig,
        "embed": EmbedConfig,
        "perturb": PerturbConfig,
    }
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, cls in commands.items():
        flags = {s for a in subparsers.choices[command]._actions for s in a.option_strings}
        missing = [f.name for f in fields(cls) if "--" + f.name.replace("_", "-") not in flags]
        assert not missing, (command, missing)


def test_the_docs_settings_page_is_generated_from_every_field():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hooks", Path(__file__).parents[1] / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (Path(__file__).parents[1] / "docs" / "reference" / "settings.md").read_text()
    built = hooks.on_page_markdown(page, None, None, None)
    assert "<!-- settings-reference -->" not in built
    for section in (RunConfig, *RunConfig.SECTIONS.values()):
        for field in dataclasses.fields(section):
            if field.name not in RunConfig.SECTIONS:  # sections are headings, their fields rows
                assert f"| `{field.name}` |" in built, (section.__name__, field.name)
    assert "|  |" not in built  # every field says what it does
    cli = hooks.on_page_markdown("<!-- cli-reference -->", None, None, None)
    assert "### `stformer perturb`" in cli and "--screen-model" in cli and "--label-fractions" in cli


def test_cli_reads_none_lists_and_a_config_file(tmp_path):
    """The radius-only neighbor graph (n_neighbors none) and metadata columns, from options and a file."""
    from datasets import load_from_disk

    adata = make_adata(40, 30, expressed=10, n_samples=2, seed=2)
    adata.write_h5ad(tmp_path / "a.h5ad")
    med, voc = tmp_path / "m.json", tmp_path / "v.json"
    assert main(["medians", str(tmp_path / "a.h5ad"), "--out", str(med), "--method", "exact", "--quiet"]) == 0
    assert main(["vocab", "--medians", str(med), "--out", str(voc)]) == 0
    (tmp_path / "tok.yaml").write_text(yaml.safe_dump({"mode": "neighborhood", "radius": 1.5, "max_length": 40}))
    common = ["tokenize", str(tmp_path / "a.h5ad"), "--medians", str(med), "--vocab", str(voc), "--quiet"]
    args = [
        "--config",
        str(tmp_path / "tok.yaml"),
        "--n-neighbors",
        "none",
        "--metadata-columns",
        "cell_type=label,sample",
    ]
    assert main([*common, "--out", str(tmp_path / "t"), *args]) == 0
    data = load_from_disk(str(tmp_path / "t"))
    assert {"label", "sample", "neighbor_start"} <= set(data.column_names)
    assert max(data["length"]) <= 40
    summary = yaml.safe_load((tmp_path / "t" / "tokenize_summary.json").read_text())
    assert summary["config"]["n_neighbors"] is None and summary["config"]["radius"] == 1.5


def test_the_fine_tuning_preset_fits_the_model_and_training_args_win(tmp_path):
    from stformer.classify.fine_tuning import training_arguments

    small = ClassifyConfig(preset="small")
    args = training_arguments(small, tmp_path, 100, {})
    assert (args.learning_rate, args.num_train_epochs) == (1e-3, 10) and small.preset_values()["class_weights"]
    assert training_arguments(ClassifyConfig(), tmp_path, 100, {}).learning_rate == 5e-5  # geneformer by default
    mine = ClassifyConfig(preset="small", class_weights=False, training_args={"learning_rate": 3e-4})
    assert (
        training_arguments(mine, tmp_path, 100, {}).learning_rate == 3e-4 and not mine.preset_values()["class_weights"]
    )
    run = {"data": ["x.h5ad"], "output_dir": "out", "label_column": "cell_type"}
    assert RunConfig.from_dict(run).classify_settings().preset == "small"  # pretrained here, from scratch
    continued = RunConfig.from_dict({**run, "pretrain": {"init_from": "geneformer_model"}})
    assert continued.classify_settings().preset == "geneformer"
    with pytest.raises(InputError, match="preset must be one of"):
        ClassifyConfig(preset="tiny")
    with pytest.raises(InputError, match="probe_head needs cell classification with mean pooling"):
        ClassifyConfig(probe_head=True, pooling="first")
