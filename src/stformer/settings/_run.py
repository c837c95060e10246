"""``RunConfig``: one of each stage's settings for ``stformer run``; reading a run config; the settings reference."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from .._config import build_config, check_keys, load_config_file
from .._constants import VOCAB_FILE
from .._errors import InputError
from ._stages import (
    ClassifyConfig,
    EmbedConfig,
    InputOptions,
    MediansConfig,
    NetworkConfig,
    PerturbConfig,
    PretrainConfig,
    TokenizerConfig,
)


@dataclass
class RunConfig:
    """Settings of ``stformer run``: the inputs, the label to classify, and one typed section per stage.

    ``input`` says how every stage reads the files (layer, gene ids, mapping, totals): the medians,
    the tokenizer and the report's baseline all read the same matrix, so those fields belong to
    ``input`` and not to the ``medians`` or ``tokenize`` sections. :meth:`from_dict` builds and
    checks every section before any stage runs.
    """

    data: list[str]  # h5ad/loom files or folders (relative paths: from the config file's folder)
    output_dir: str  # every stage writes below it
    label_column: str  # obs column to classify (carried into the token dataset)
    gene_medians: str | None = None  # medians file (e.g. Geneformer's .pkl) instead of medians of these cells
    token_dictionary: str | None = None  # vocabulary file (e.g. Geneformer's .pkl) instead of one from the medians
    input: InputOptions = field(default_factory=InputOptions)  # how every stage reads the files
    medians: MediansConfig = field(default_factory=MediansConfig)  # method and chunk size
    tokenize: TokenizerConfig = field(default_factory=TokenizerConfig)  # mode, lengths, neighbors, columns
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # model shape and training
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)  # fine-tuning; metadata_column is label_column
    embed: EmbedConfig = field(default_factory=EmbedConfig)  # layer and batch size
    perturb: PerturbConfig | None = None  # an in silico perturbation screen (none: no screen); see screen_model
    network: NetworkConfig | None = None  # a gene network from the pretrained model's attention (none: no network)

    SECTIONS: ClassVar[dict[str, type]] = {
        "input": InputOptions,
        "medians": MediansConfig,
        "tokenize": TokenizerConfig,
        "pretrain": PretrainConfig,
        "classify": ClassifyConfig,
        "embed": EmbedConfig,
        "perturb": PerturbConfig,
        "network": NetworkConfig,
    }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "run config") -> RunConfig:
        """Build every section from plain values (a YAML/JSON file), checking each key and value."""
        check_keys(values, [f.name for f in fields(cls)], source=source, what="stformer run")
        missing = [name for name in ("data", "output_dir", "label_column") if name not in values]
        if missing:
            msg = f"{source}: {missing[0]!r} is missing (data, output_dir and label_column are required)"
            raise InputError(msg)
        shared = {f.name for f in fields(InputOptions)}
        sections = {}
        for name, section_cls in cls.SECTIONS.items():
            section = dict(values.get(name) or {})
            misplaced = sorted(shared & set(section)) if name in ("medians", "tokenize") else []
            if misplaced:
                msg = (
                    f"{source}, section {name!r}: {misplaced[0]!r} belongs to the input section, which every "
                    "stage reads the files with"
                )
                raise InputError(msg)
            if name == "classify" and "metadata_column" in section:
                msg = f"{source}, section 'classify': give the label as label_column (top level), not metadata_column"
                raise InputError(msg)
            if name in ("perturb", "network"):
                if values.get(name) is None:
                    continue
                section.setdefault("state_column", values["label_column"])
            sections[name] = build_config(section_cls, section, source=f"{source}, section {name!r}")
        data = values["data"]
        return cls(
            data=[data] if isinstance(data, str) else list(data),
            output_dir=values["output_dir"],
            label_column=values["label_column"],
            gene_medians=values.get("gene_medians"),
            token_dictionary=values.get("token_dictionary"),
            **sections,
        )

    def vocabulary_file(self) -> str | None:
        """The given vocabulary: ``token_dictionary``, else the ``vocab.json`` of ``pretrain.init_from``."""
        if self.token_dictionary is not None or self.pretrain.init_from is None:
            return self.token_dictionary
        own = Path(self.pretrain.init_from) / VOCAB_FILE
        return str(own) if own.is_file() else None

    def medians_settings(self) -> MediansConfig:
        """The medians section with the input section's reading options."""
        return replace(self.medians, **asdict(self.input))

    def tokenize_settings(self) -> TokenizerConfig:
        """The tokenize section with the input options and every column a later stage reads."""
        columns = self.tokenize.column_map()
        columns.update({c: c for c in self.carried_columns()})
        return replace(self.tokenize, **asdict(self.input), metadata_columns=columns)

    def classify_settings(self) -> ClassifyConfig:
        """The classify section with ``label_column`` as its ``metadata_column``.

        Its ``preset`` defaults to ``"small"`` when the run pretrains its model from scratch (no
        ``pretrain.init_from``), else to ``"geneformer"``.
        """
        preset = self.classify.preset or ("small" if self.pretrain.init_from is None else "geneformer")
        return replace(self.classify, metadata_column=self.label_column, preset=preset)

    def screens_in_classifier(self) -> bool:
        """Whether the perturb stage screens in the run's classifier rather than the pretrained model.

        ``perturb.screen_model``: ``"classifier"``, ``"pretrained"``, or ``"auto"``: the classifier
        when its labels are the screen's ``state_column`` (its embeddings separate the states; the
        pretrained model's may not).
        """
        choice = self.perturb.screen_model
        return choice == "classifier" or (choice == "auto" and self.perturb.state_column == self.label_column)

    def carried_columns(self) -> dict[str, str]:
        """``obs`` columns that later stages read from the token dataset -> the role each plays (for errors)."""
        roles = {self.label_column: "label_column"}
        for column in [self.classify.split_column, *(self.classify.filter_data or {})]:
            roles.setdefault(column, "a column the classify section uses")
        for name, section in (("perturb", self.perturb), ("network", self.network)):
            if section is not None:
                for column in [section.state_column, *(section.filter or {})]:
                    roles.setdefault(column, f"a column the {name} section uses")
        roles.pop(None, None)
        return roles


def load_run_config(path: str | Path) -> RunConfig:
    """Read and check a run config (YAML/JSON); relative paths are resolved against the file's folder."""
    path = Path(path)
    config = RunConfig.from_dict(load_config_file(path), source=str(path))

    def resolve(value):
        return (
            str((path.parent / value).resolve()) if isinstance(value, str) and not Path(value).is_absolute() else value
        )

    config.data = [resolve(d) for d in config.data]
    config.output_dir, config.token_dictionary = resolve(config.output_dir), resolve(config.token_dictionary)
    config.input.gene_mapping, config.gene_medians = resolve(config.input.gene_mapping), resolve(config.gene_medians)
    config.pretrain.init_from = resolve(config.pretrain.init_from)
    if config.perturb is not None:
        config.perturb.gene_mapping = resolve(config.perturb.gene_mapping)
    if config.network is not None:
        config.network.gene_mapping = resolve(config.network.gene_mapping)
        config.network.input_files = config.network.input_files and [resolve(f) for f in config.network.input_files]
    return config


def settings_reference() -> str:
    """The docs' settings reference: the run config's top level, then one table per section.

    The CLI options of each command are the same fields (``--field-name``).
    """
    from dataclasses import MISSING

    from .._config import field_help

    shared = {f.name for f in fields(InputOptions)}
    tables = [("top level", RunConfig, [f for f in fields(RunConfig) if f.name not in RunConfig.SECTIONS])]
    for name, cls in RunConfig.SECTIONS.items():
        tables.append(
            (f"`{name}` ({cls.__name__})", cls, [f for f in fields(cls) if name == "input" or f.name not in shared])
        )
    lines = []
    for title, cls, own in tables:
        helps = field_help(cls)
        lines += [f"**{title}**", "", "| key | default | meaning |", "|---|---|---|"]
        for f in own:
            default = (
                "required"
                if f.default is MISSING and f.default_factory is MISSING
                else (f"`{f.default if f.default is not MISSING else f.default_factory()!r}`")
            )
            lines.append(f"| `{f.name}` | {default} | {helps.get(f.name, '')} |")
        lines.append("")
    return "\n".join(lines)
