"""``stformer run``: every stage from h5ad/loom files to a classifier, embeddings and a report.

One config (YAML/JSON) holds each stage's settings. A stage whose outputs exist and whose inputs
(its settings and the stages before it) are unchanged is skipped, so a re-run after an
interruption continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._config import build_config, check_keys, load_config_file
from ._errors import InputError, InputKeyError
from ._files import atomic_path, write_json

STAGES = ("medians", "vocab", "tokenize", "pretrain", "classify", "embed", "report")
EMBED_OPTIONS = ["layer", "batch_size", "genes"]  # keys of the embed section (embed() options)


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


def _classifier_options(config: RunConfig) -> tuple[dict, float]:
    """The classify section as ``GenericClassifier`` options and the held-out share ``test_size``."""
    options = dict(config.classify)
    return options, options.pop("test_size", 0.2)


def carried_columns(config: RunConfig) -> list[str]:
    """``obs`` columns that later stages read from the token dataset: the label, the split groups, the filters."""
    options, _ = _classifier_options(config)
    columns = [config.label_column, options.get("split_column"), *(options.get("filter_data") or {})]
    return list(dict.fromkeys(c for c in columns if c))


def check_config(config: RunConfig) -> None:
    """Check every section's options (names and values) before any stage runs."""
    import inspect

    from .classify import GenericClassifier
    from .pretrain import PretrainConfig
    from .tokenize import TokenizerConfig
    from .tokenize._common import InputOptions

    medians = {k: v for k, v in config.medians.items() if k != "method"}
    build_config(InputOptions, medians, source="run config, section 'medians'")
    if config.medians.get("method", "tdigest") not in ("tdigest", "exact"):
        msg = f"run config, section 'medians': method must be 'tdigest' or 'exact', got {config.medians['method']!r}"
        raise InputError(msg)
    build_config(TokenizerConfig, config.tokenize, source="run config, section 'tokenize'").validate()
    build_config(PretrainConfig, config.pretrain, source="run config, section 'pretrain'")
    options, test_size = _classifier_options(config)
    names = [n for n in inspect.signature(GenericClassifier).parameters if n != "metadata_column"]
    check_keys(options, [*names, "test_size"], source="run config, section 'classify'", what="GenericClassifier")
    if not 0 < test_size < 1:
        msg = f"run config, section 'classify': test_size must lie in (0, 1), got {test_size}"
        raise InputError(msg)
    GenericClassifier(config.label_column, **options)
    check_keys(config.embed, EMBED_OPTIONS, source="run config, section 'embed'", what="embed")


def check_inputs(config: RunConfig) -> None:
    """Fail before any long work: bad options, missing files or columns, unknown gene ids."""
    from .tokenize._common import InputOptions, gene_ids_of
    from .tokenize._sources import find_data_files, open_source

    check_config(config)
    reading = {k: v for k, v in config.medians.items() if k != "method"}
    options = build_config(InputOptions, reading, source="medians section")
    columns = carried_columns(config)
    for path in find_data_files(config.data):
        with open_source(path, layer=options.layer, gene_id_column=options.gene_id_column) as src:
            for column in columns:
                if src.obs_column(column) is None:
                    role = "label_column" if column == config.label_column else "a column the classify section uses"
                    msg = f"{path}: obs column {column!r} ({role}) not found"
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
        "classify": out / "classify",
        "labeled": out / "classify" / "cells_labeled.dataset",
        "eval": out / "classify" / "eval.dataset",
        "embed": out / "cell_embeddings.npz",
        "report": out / "report" / "summary.md",
    }
    stamps = out / ".stages"
    stamps.mkdir(exist_ok=True)
    upstream, fingerprints = "", {}
    for stage in STAGES:
        section = getattr(config, stage, {}) if stage not in ("vocab", "report") else {}
        if stage == "classify":
            section = {**section, "label_column": config.label_column}
        upstream = fingerprints[stage] = hashlib.sha256(
            json.dumps([upstream, config.data, section], sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
    actions: dict[str, Callable[[], None]] = {
        "medians": lambda: _medians(config, paths),
        "vocab": lambda: _vocab(paths),
        "tokenize": lambda: _tokenize(config, paths, progress),
        "pretrain": lambda: _pretrain(config, paths, fingerprints["pretrain"]),
        "classify": lambda: _classify(config, paths),
        "embed": lambda: _embed(config, paths, progress),
        "report": lambda: _report(config, paths, out),
    }
    outputs = {**paths, "classify": paths["classify"] / "model"}
    log = {}
    for stage in STAGES:
        stamp = stamps / f"{stage}.json"
        done = stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprints[stage]
        if stage not in stages or (done and outputs[stage].exists()):
            log[stage] = "skipped"
            continue
        start = time.perf_counter()
        actions[stage]()
        log[stage] = round(time.perf_counter() - start, 1)
        write_json({"fingerprint": fingerprints[stage], "seconds": log[stage]}, stamp, overwrite=True)
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
    columns.update({c: c for c in carried_columns(config)})
    settings = build_config(TokenizerConfig, {**options, "metadata_columns": columns})
    tokenize_data(
        config.data, paths["tokenize"], paths["medians"], paths["vocab"], settings, overwrite=True, progress=progress
    )


def _pretrain(config: RunConfig, paths: dict, fingerprint: str) -> None:
    """Pretrain in a folder of this fingerprint's own; replace the previous model only when done.

    An interrupted run with the same settings and inputs continues from its last checkpoint; a
    run whose settings or tokens changed starts clean (the old model stays until the new one is
    complete).
    """
    from transformers.trainer_utils import get_last_checkpoint

    from .pretrain import PretrainConfig, pretrain

    settings = build_config(PretrainConfig, config.pretrain)
    root = paths["pretrain"].parent.parent  # output_dir/pretrain
    work = root / f".work-{fingerprint}"
    for stale in root.glob(".work-*"):
        if stale != work:
            shutil.rmtree(stale)
    training = work / settings.run_name / "training"
    interrupted = training.is_dir() and get_last_checkpoint(str(training)) is not None
    pretrain(paths["tokenize"], work, settings, resume=interrupted)
    with atomic_path(root / settings.run_name, overwrite=True) as target:
        os.replace(work / settings.run_name, target)
    shutil.rmtree(work)


def _classify(config: RunConfig, paths: dict) -> None:
    from .classify import GenericClassifier

    options, test_size = _classifier_options(config)
    classifier = GenericClassifier(config.label_column, **options)
    data, _ = classifier.prepare_data(str(paths["tokenize"]), str(paths["classify"]), "cells")
    classifier.train(str(paths["pretrain"]), data, str(paths["classify"]), test_size=test_size, overwrite=True)


def _embed(config: RunConfig, paths: dict, progress: bool) -> None:
    from .embed import embed, write_embeddings

    result = embed(paths["pretrain"], paths["tokenize"], progress=progress, **config.embed)
    write_embeddings(result, paths["embed"], overwrite=True)


def _report(config: RunConfig, paths: dict, out: Path) -> None:
    from .report import write_report

    write_report(config, out, paths)


__all__ = ["RunConfig", "check_inputs", "load_run_config", "run_pipeline"]
