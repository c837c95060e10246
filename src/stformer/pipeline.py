"""``stformer run``: every stage from h5ad/loom files to a classifier, embeddings and a report.

One config (YAML/JSON) holds each stage's settings. A stage whose outputs exist and whose inputs
(its settings and the stages before it) are unchanged is skipped, so a re-run after an
interruption continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._config import build_config, load_config_file
from ._errors import InputError, InputKeyError
from ._files import write_json

STAGES = ("medians", "vocab", "tokenize", "pretrain", "classify", "embed", "report")


@dataclass
class RunConfig:
    """Settings of ``stformer run``: inputs, the label to classify, and one section per stage."""

    data: list[str]  # h5ad/loom files or folders
    output_dir: str
    label_column: str  # obs column to classify (carried into the token dataset)
    medians: dict = field(default_factory=dict)  # InputOptions fields + "method"
    tokenize: dict = field(default_factory=dict)  # TokenizerConfig fields
    pretrain: dict = field(default_factory=dict)  # PretrainConfig fields
    classify: dict = field(default_factory=dict)  # GenericClassifier options + "test_size"
    embed: dict = field(default_factory=dict)  # "layer", "batch_size"


def load_run_config(path: str | Path) -> RunConfig:
    """Read a run config; relative paths are resolved against the config file's folder."""
    path = Path(path)
    values = load_config_file(path)
    config = build_config(RunConfig, values, source=str(path))
    config.data = [str((path.parent / d).resolve()) if not Path(d).is_absolute() else d for d in config.data]
    if not Path(config.output_dir).is_absolute():
        config.output_dir = str((path.parent / config.output_dir).resolve())
    return config


def check_inputs(config: RunConfig) -> None:
    """Fail before any long work: missing files, a missing label column, unknown gene ids."""
    from .tokenize._common import InputOptions, gene_ids_of
    from .tokenize._sources import find_data_files, open_source

    reading = {k: v for k, v in config.medians.items() if k != "method"}
    options = build_config(InputOptions, reading, source="medians section")
    for path in find_data_files(config.data):
        with open_source(path, layer=options.layer, gene_id_column=options.gene_id_column) as src:
            if src.obs_column(config.label_column) is None:
                msg = f"{path}: obs column {config.label_column!r} (label_column) not found"
                raise InputKeyError(msg)
            if not (gene_ids_of(src, options) != "").any():
                msg = (
                    f"{path}: none of its gene identifiers (like {list(src.raw_gene_ids[:3])}) is known to "
                    "the gene_mapping; check gene_id_column and the mapping"
                )
                raise InputError(msg)


def run_pipeline(config: RunConfig, *, stages: tuple[str, ...] = STAGES, progress: bool = True) -> dict:
    """Run (or skip, when done) each stage; returns ``{stage: seconds or "skipped"}``."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_inputs(config)
    paths = {
        "medians": out / "medians.json",
        "vocab": out / "vocab.json",
        "tokenize": out / "tokens",
        "pretrain": out / "pretrain" / config.pretrain.get("run_name", "pretrain") / "model",
        "classify": out / "classify" / "model",
        "embed": out / "cell_embeddings.npz",
        "report": out / "report" / "summary.md",
    }
    actions: dict[str, Callable[[], None]] = {
        "medians": lambda: _medians(config, paths),
        "vocab": lambda: _vocab(paths),
        "tokenize": lambda: _tokenize(config, paths, progress),
        "pretrain": lambda: _pretrain(config, out),
        "classify": lambda: _classify(config, paths, out),
        "embed": lambda: _embed(config, paths, out, progress),
        "report": lambda: _report(config, paths, out),
    }
    stamps = out / ".stages"
    stamps.mkdir(exist_ok=True)
    upstream, log = "", {}
    for stage in STAGES:
        section = getattr(config, stage, {}) if stage not in ("vocab", "report") else {}
        if stage == "classify":
            section = {**section, "label_column": config.label_column}
        fingerprint = hashlib.sha256(
            json.dumps([upstream, config.data, section], sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        upstream = fingerprint
        stamp = stamps / f"{stage}.json"
        done = stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint
        if stage not in stages or (done and paths[stage].exists()):
            log[stage] = "skipped"
            continue
        start = time.perf_counter()
        actions[stage]()
        log[stage] = round(time.perf_counter() - start, 1)
        write_json({"fingerprint": fingerprint, "seconds": log[stage]}, stamp, overwrite=True)
        print(f"[stformer run] {stage}: {log[stage]} s", flush=True)
    return log


def _medians(config: RunConfig, paths: dict) -> None:
    from .tokenize import compute_gene_medians, write_gene_medians
    from .tokenize._common import InputOptions

    options = dict(config.medians)
    method = options.pop("method", "tdigest")
    medians = compute_gene_medians(config.data, method=method, options=build_config(InputOptions, options))
    write_gene_medians(medians, paths["medians"], overwrite=True)


def _vocab(paths: dict) -> None:
    from ._files import load_mapping_file
    from .vocab import build_token_dictionary, save_token_dictionary

    save_token_dictionary(build_token_dictionary(load_mapping_file(paths["medians"])), paths["vocab"], overwrite=True)


def _tokenize(config: RunConfig, paths: dict, progress: bool) -> None:
    from .tokenize import TokenizerConfig, tokenize_data

    options = dict(config.tokenize)
    columns = dict(options.pop("metadata_columns", None) or {})
    columns[config.label_column] = config.label_column
    settings = build_config(TokenizerConfig, {**options, "metadata_columns": columns})
    tokenize_data(
        config.data, paths["tokenize"], paths["medians"], paths["vocab"], settings, overwrite=True, progress=progress
    )


def _pretrain(config: RunConfig, out: Path) -> None:
    from transformers.trainer_utils import get_last_checkpoint

    from .pretrain import PretrainConfig, pretrain

    settings = build_config(PretrainConfig, config.pretrain)
    training = out / "pretrain" / settings.run_name / "training"
    interrupted = training.is_dir() and get_last_checkpoint(str(training)) is not None
    pretrain(out / "tokens", out / "pretrain", settings, resume=interrupted)


def _classify(config: RunConfig, paths: dict, out: Path) -> None:
    from .classify import GenericClassifier

    options = dict(config.classify)
    test_size = options.pop("test_size", 0.2)
    classifier = GenericClassifier(config.label_column, **options)
    data, _ = classifier.prepare_data(str(paths["tokenize"]), str(out / "classify"), "cells")
    classifier.train(str(paths["pretrain"]), data, str(out / "classify"), test_size=test_size)


def _embed(config: RunConfig, paths: dict, out: Path, progress: bool) -> None:
    from .embed import embed, write_embeddings

    result = embed(paths["pretrain"], paths["tokenize"], progress=progress, **config.embed)
    write_embeddings(result, paths["embed"], overwrite=True)


def _report(config: RunConfig, paths: dict, out: Path) -> None:
    from .report import write_report

    write_report(config, out, paths)


__all__ = ["RunConfig", "check_inputs", "load_run_config", "run_pipeline"]
