"""The stage dataclasses: one per stage, each checking its values in ``__post_init__``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._constants import DEFAULT_MAX_LENGTH
from .._errors import InputError
from .._files import load_mapping_file
from .._training_args import translate_training_args
from .._warnings import StformerWarning

MODES = ("spot", "neighborhood")
DUPLICATE_RULES = ("sum", "first", "error")
MEDIAN_METHODS = ("tdigest", "exact")


@dataclass
class InputOptions:
    """How to read gene counts from h5ad/loom files: the ``input`` section of ``stformer run``.

    ``stformer run`` gives the same options to the medians, the tokenizer and the report's
    baseline, so all of them read the same matrix.
    """

    layer: str | None = None  # matrix: None/"X" for X, "raw" for raw.X, or a layers key
    gene_id_column: str | None = None  # var column (loom: row attribute) of gene ids; None: var_names
    gene_mapping: Mapping[str, str] | str | Path | None = None  # id translation (symbol -> Ensembl): dict or file
    duplicate_genes: str = "sum"  # columns sharing one gene id: "sum" them, keep the "first", or "error"
    total_counts_column: str | None = "n_counts"  # obs column of per-cell totals; computed when absent or None
    accept_normalized: bool = False  # rank non-integer (normalized) values without a warning

    def __post_init__(self) -> None:
        if self.duplicate_genes not in DUPLICATE_RULES:
            msg = f"duplicate_genes must be one of {DUPLICATE_RULES}, got {self.duplicate_genes!r}"
            raise InputError(msg)
        if self.total_counts_column == "":
            self.total_counts_column = None

    def resolved_mapping(self) -> dict[str, str] | None:
        """The gene mapping as a dict (loaded when given as a path)."""
        if self.gene_mapping is None or isinstance(self.gene_mapping, Mapping):
            return self.gene_mapping
        return dict(load_mapping_file(self.gene_mapping))


@dataclass
class MediansConfig(InputOptions):
    """Settings of :func:`~stformer.compute_gene_medians` and ``stformer medians``."""

    method: str = "tdigest"  # "tdigest" (bounded memory, relative error ~1e-3) or "exact" (keeps every value)
    chunk_size: int = 2048  # cells read at once; bounds memory

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in MEDIAN_METHODS:
            msg = f"method must be one of {MEDIAN_METHODS}, got {self.method!r}"
            raise InputError(msg)
        if self.chunk_size < 1:
            msg = f"chunk_size must be >= 1, got {self.chunk_size}"
            raise InputError(msg)


@dataclass
class TokenizerConfig(InputOptions):
    """Settings of :func:`~stformer.tokenize_data` and ``stformer tokenize``.

    ``"spot"`` mode: each cell's own ranked genes. ``"neighborhood"``: the cell's ranked genes,
    then those of its spatial neighbors (their counts summed and normalized by the neighbors' own
    totals); each part is capped at half of ``max_length`` unless the other part is shorter.
    Neighbors never cross samples (``sample_column``) nor files.
    """

    mode: str = "spot"  # "spot" or "neighborhood"
    max_length: int | None = None  # tokens per cell; None: 2,048 in spot mode, 4,096 in neighborhood mode
    metadata_columns: Mapping[str, str] | Sequence[str] | None = None  # obs columns to carry: list or {obs: name}
    min_count_coverage: float = 0.5  # fail when the vocabulary covers less of a file's counts
    special_tokens: bool | None = None  # frame cells with <cls> ... <eos> (V2); None: if the dictionary has them
    sample_column: str | None = None  # obs column naming each cell's sample (slide)
    n_neighbors: int | None = 6  # nearest cells (6: Visium's hexagonal grid; within radius if set); None: all in radius
    radius: float | None = None  # neighbor distance cutoff in obsm units
    spatial_key: str = "spatial"  # obsm key of the coordinates
    connectivities_key: str | None = None  # obsp graph to use instead (e.g. squidpy's "spatial_connectivities")
    chunk_size: int = 256  # cells per work unit: small arrays stay in cache
    nproc: int | None = None  # worker threads (NumPy, h5py and the sort release the GIL); None: the cores, at most 8
    max_shard_size: int = 500_000_000  # approximate bytes per Arrow shard of the output

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            msg = f"mode must be one of {MODES}, got {self.mode!r}"
            raise InputError(msg)
        if self.length_cap < (2 if self.mode == "neighborhood" else 1) + (2 if self.special_tokens else 0):
            msg = f"max_length must be positive (2 or more in neighborhood mode), got {self.max_length}"
            raise InputError(msg)
        if not 0 <= self.min_count_coverage <= 1:
            msg = f"min_count_coverage must lie in [0, 1], got {self.min_count_coverage}"
            raise InputError(msg)
        if self.chunk_size < 1 or (self.nproc is not None and self.nproc < 1):
            msg = f"chunk_size and nproc must be >= 1, got {self.chunk_size} and {self.nproc}"
            raise InputError(msg)

    @property
    def workers(self) -> int:
        """``nproc`` with its default filled in: the cores this process may use, at most 8."""
        return self.nproc if self.nproc is not None else min(len(os.sched_getaffinity(0)), 8)

    @property
    def length_cap(self) -> int:
        """``max_length`` with the mode's default filled in."""
        if self.max_length is not None:
            return self.max_length
        return DEFAULT_MAX_LENGTH[self.mode]

    def column_map(self) -> dict[str, str]:
        """``metadata_columns`` as ``{obs_column: dataset_column}``."""
        cols = self.metadata_columns or {}
        return dict(cols) if isinstance(cols, Mapping) else {c: c for c in cols}


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain` and ``stformer pretrain`` (defaults follow Geneformer's recipe)."""

    num_layers: int = 6  # transformer layers
    hidden_size: int = 256  # embedding width
    num_heads: int = 4  # attention heads (hidden_size must be a multiple)
    intermediate_size: int = 512  # feed-forward width
    activation: str = "relu"  # feed-forward activation (a transformers ACT2FN name)
    max_length: int | None = None  # position embeddings; None: 2048, 4096 for neighborhood data
    hidden_dropout: float = 0.02  # dropout of embeddings and layer outputs
    attention_dropout: float = 0.0  # > 0 forces the slow unfused attention path
    batch_size: int = 12  # per device
    gradient_accumulation_steps: int = 1  # batches whose gradients add up to one optimizer step
    learning_rate: float = 1e-3  # peak learning rate (AdamW)
    lr_scheduler: str = "linear"  # learning-rate schedule after warmup (a transformers scheduler name)
    warmup_steps: int = 10_000  # capped to a tenth of the run
    weight_decay: float = 0.001  # AdamW weight decay
    epochs: float = 3.0  # passes over the training cells (stformer run, 0 with init_from: that model as it is)
    max_steps: int = -1  # > 0 overrides epochs
    mlm_probability: float = 0.15  # share of real tokens masked (80% <mask>, 10% random gene, 10% unchanged)
    seed: int = 42  # initialization, masking and batch order
    group_by_length: bool = True  # batches of similar length (less padding)
    bf16: bool | None = None  # None: on where bf16 is fast (CUDA with bf16, CPUs with AMX or AVX512-BF16)
    fast_kernels: bool = True  # stformer's CPU kernels (blocked bf16 attention, passes, cheaper dropout)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, slower)
    eval_fraction: float = 0.0  # held-out share of cells for eval loss
    eval_steps: int = 500  # steps between eval losses (with eval_fraction > 0)
    logging_steps: int = 50  # steps between log lines
    save_steps: int = 1000  # checkpoint interval (for --resume)
    save_total_limit: int = 2  # checkpoints kept
    run_name: str = "pretrain"  # folder of this run under the output folder
    init_from: str | None = None  # continue pretraining this model folder (its shape and dropouts win over these)
    extend_positions: bool = False  # init_from: lengthen its position embeddings when cells are longer than it reads
    deepspeed: str | None = None  # DeepSpeed JSON config (needs deepspeed installed)
    dataloader_num_workers: int = 0  # data-loading processes (0: in the training process)

    def __post_init__(self) -> None:
        sizes = {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }
        small = [name for name, value in sizes.items() if value < 1]
        if small:
            msg = f"{small[0]} must be >= 1, got {sizes[small[0]]}"
            raise InputError(msg)
        if self.hidden_size % self.num_heads:
            msg = f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})"
            raise InputError(msg)
        if not 0 < self.mlm_probability < 1 or not 0 <= self.eval_fraction < 1:
            msg = (
                f"mlm_probability must lie in (0, 1) and eval_fraction in [0, 1), got {self.mlm_probability} "
                f"and {self.eval_fraction}"
            )
            raise InputError(msg)


CLASSIFIER_TYPES = ("sequence", "token")
# Fine-tuning defaults beneath training_args. "geneformer": the Trainer's and Geneformer's examples' learning rate, for
# a model pretrained on a large corpus. "small": a small model pretrained from scratch on the data at hand, which
# needs a larger learning rate, more epochs and balanced classes (two DLPFC slices: macro-F1 0.48 -> 0.73).
FINE_TUNING_PRESETS = {
    "geneformer": {"learning_rate": 5e-5, "num_train_epochs": 3, "class_weights": False},
    "small": {"learning_rate": 1e-3, "num_train_epochs": 10, "class_weights": True},
}
POOLINGS = ("mean", "first")
DEVICES = ("auto", "cpu", "cuda")  # "auto": CUDA when present


@dataclass
class ClassifyConfig:
    """Settings of :class:`~stformer.GenericClassifier`, ``stformer classify`` and the run's ``classify`` section.

    The first fields are the specification's ``GenericClassifier`` parameters; ``test_size`` is
    the held-out share when ``train`` splits the data itself.
    """

    metadata_column: str | None = None  # dataset column of the cell labels (stformer run: label_column)
    classifier_type: str = "sequence"  # "sequence" classifies cells, "token" classifies genes
    gene_class_dict: dict[str, list[str]] | None = None  # genes: class -> gene ids
    label_mapping: dict[str, int] | None = None  # class -> id, instead of the sorted classes
    token_dictionary_file: str | None = None  # vocabulary file (genes; tokenizer when the model has none)
    filter_data: dict[str, Any] | None = None  # {column: allowed value or values} kept before classifying
    rare_threshold: float = 0.0  # drop classes below this share of the cells
    max_examples: int | None = None  # keep at most this many examples (seeded shuffle)
    max_examples_per_class: int | None = None  # keep at most this many examples per class
    training_args: dict[str, Any] = field(default_factory=dict)  # TrainingArguments options (older names translated)
    ray_config: dict[str, Any] | None = None  # Ray Tune search space over TrainingArguments (n_trials > 0)
    resources_per_trial: dict[str, float] | None = None  # Ray Tune trial resources; None: 1 GPU if present, 1 CPU
    freeze_layers: int = 0  # the first layers kept frozen
    forward_batch_size: int = 48  # cells per batch in evaluation and prediction
    nproc: int = 4  # processes for dataset maps over 20,000 examples or more
    split_column: str | None = None  # obs column (sample, patient) whose groups stay on one side of the split
    held_out_groups: list[str] | None = None  # with split_column: exactly these groups held out (e.g. one slice)
    pooling: str = "mean"  # cells: "mean" of the final hidden states, standardized; "first": BERT's head
    class_weights: bool | None = None  # weight the loss by inverse class frequency; None: the preset's
    probe_head: bool = False  # cells, mean pooling: the head starts as a linear probe (LP-FT); for few labels
    preset: str | None = None  # fine-tuning defaults: "small" or "geneformer" (None: geneformer; run: small)
    gene_dropout: float | None = None  # cells: leave out each gene with this probability in training; None: 0.1
    fast_kernels: bool = True  # stformer's CPU kernels for training and prediction (see stformer._kernels)
    seed: int = 42  # split, shuffles and training
    test_size: float = 0.2  # held-out share when train() splits the data
    random_init_baseline: bool = False  # stformer run: also fine-tune a randomly initialized model (pretraining's gain)
    label_fractions: list[float] | None = None  # stformer run: also fine-tune on these shares of the training labels

    def __post_init__(self) -> None:
        if self.classifier_type not in CLASSIFIER_TYPES:
            msg = f"classifier_type must be one of {CLASSIFIER_TYPES}, got {self.classifier_type!r}"
            raise InputError(msg)
        if self.classifier_type == "token" and (not self.gene_class_dict or not self.token_dictionary_file):
            msg = "classifier_type='token' needs gene_class_dict (class -> genes) and token_dictionary_file"
            raise InputError(msg)
        if self.pooling not in POOLINGS:
            msg = f"pooling must be one of {POOLINGS}, got {self.pooling!r}"
            raise InputError(msg)
        if self.preset is not None and self.preset not in FINE_TUNING_PRESETS:
            msg = f"preset must be one of {list(FINE_TUNING_PRESETS)} or None, got {self.preset!r}"
            raise InputError(msg)
        if self.probe_head and (self.classifier_type, self.pooling) != ("sequence", "mean"):
            msg = "probe_head needs cell classification with mean pooling (classifier_type='sequence', pooling='mean')"
            raise InputError(msg)
        if self.classifier_type == "token" and self.gene_dropout:
            msg = "gene_dropout applies to cell classification (classifier_type='sequence') only"
            raise InputError(msg)
        if self.gene_dropout is None:
            self.gene_dropout = 0.1 if self.classifier_type == "sequence" else 0.0
        if not 0 <= self.gene_dropout < 1:
            msg = f"gene_dropout must lie in [0, 1), got {self.gene_dropout}"
            raise InputError(msg)
        if not 0 <= self.rare_threshold < 1:
            msg = f"rare_threshold must lie in [0, 1), got {self.rare_threshold}"
            raise InputError(msg)
        if isinstance(self.held_out_groups, str):
            self.held_out_groups = [g for g in self.held_out_groups.split(",") if g]
        if self.held_out_groups and self.split_column is None:
            msg = "held_out_groups needs split_column (the column whose groups they are)"
            raise InputError(msg)
        if not 0 < self.test_size < 1:
            msg = f"test_size must lie in (0, 1), got {self.test_size}"
            raise InputError(msg)
        if isinstance(self.label_fractions, str):
            self.label_fractions = [float(f) for f in self.label_fractions.split(",") if f]
        if any(not 0 < f <= 1 for f in self.label_fractions or []):
            msg = f"label_fractions must lie in (0, 1], got {self.label_fractions}"
            raise InputError(msg)
        self.training_args = translate_training_args(self.training_args)

    def preset_values(self) -> dict[str, Any]:
        """The preset's learning rate, epochs and class weights, ``class_weights`` when set overriding its own."""
        values = dict(FINE_TUNING_PRESETS[self.preset or "geneformer"])
        if self.class_weights is not None:
            values["class_weights"] = self.class_weights
        return values


@dataclass
class EmbedConfig:
    """Settings of :func:`~stformer.embed`, ``stformer embed`` and the run's ``embed`` section."""

    hidden_layer: int = -1  # hidden layer whose states are averaged: -1 the last, 0 the embeddings
    layer: int | None = None  # deprecated name of hidden_layer (input.layer is the AnnData matrix)
    batch_size: int = 32  # cells per forward pass (cells of similar length together)
    genes: bool = False  # also each gene's hidden state averaged over the cells expressing it
    pooling: str = "mean"  # cell embedding: "mean" over its genes, or "cls": its <cls> token's state (V2 models)
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    bf16: bool | None = None  # None: where the device is fast at it (CUDA; CPUs whose bf16 products are faster)
    token_dictionary: str | None = None  # the model's dictionary when its folder has none (default: the tokens')

    def __post_init__(self) -> None:
        _rename_layer(self)
        if self.batch_size < 1:
            msg = f"batch_size must be >= 1, got {self.batch_size}"
            raise InputError(msg)
        if self.pooling not in ("mean", "cls"):
            msg = f"pooling must be 'mean' or 'cls', got {self.pooling!r}"
            raise InputError(msg)
        if self.device not in DEVICES:
            msg = f"device must be one of {DEVICES}, got {self.device!r}"
            raise InputError(msg)


PERTURBATIONS = ("delete", "overexpress", "inhibit", "activate")
SIMILARITIES = ("cell", "genes")  # cosine of the mean embeddings; mean of each gene's own cosine (Geneformer's)
SCREEN_MODELS = ("auto", "classifier", "pretrained")


@dataclass
class PerturbConfig:
    """Settings of :func:`~stformer.perturb` and ``stformer perturb``: an in silico perturbation screen."""

    perturbation: str = "delete"  # "delete", "overexpress", "inhibit" or "activate" (see perturb_sequence)
    genes: list[str] | str = "all"  # "all": every gene a cell expresses, one at a time; or gene ids/symbols
    together: bool = False  # perturb the listed genes together, not each alone
    anchor_gene: str | None = None  # perturb this gene together with each other gene of the cell
    fraction: float = 0.25  # inhibit/activate: ranks moved, as a share of the cell's length
    filter: dict[str, Any] | None = None  # {obs column: allowed value or values} of the cells perturbed
    state_column: str | None = None  # column of the cell states (goal shifts need it)
    start_state: str | None = None  # perturb cells of this state only
    goal_state: str | None = None  # report the shift toward the mean embedding of these cells
    alt_states: list[str] | None = None  # also the shift toward each of these states
    max_cells: int | None = 100  # perturb at most this many cells (a seeded draw)
    null_draws: int = 5  # null: expressed genes at the nearest ranks perturbed per screened (cell, gene)
    gene_shifts: bool = False  # also each other gene's own embedding shift (gene_shifts.parquet/.csv)
    gene_mapping: dict[str, str] | str | None = None  # symbol -> Ensembl id (dict or file), to accept symbols
    hidden_layer: int = -1  # hidden layer compared (-1 the last; Geneformer's emb_layer=-1 is -2)
    layer: int | None = None  # deprecated name of hidden_layer (input.layer is the AnnData matrix)
    similarity: str = "cell"  # "cell": cosine of the mean embeddings; "genes": mean of each gene's cosine (Geneformer)
    screen_model: str = "auto"  # stformer run: "classifier", "pretrained"; auto: the classifier if on state_column
    batch_size: int = 8  # sequences of 2,048 genes per forward pass (shorter: more), 1.1-1.9 GB at the default shape
    chunk_cells: int = 64  # cells screened and written together (a killed run resumes after the last chunk)
    device: str = "auto"  # "auto" (CUDA when present, this rank's GPU under torchrun), "cpu" or "cuda"
    bf16: bool | None = None  # None: where the device is fast at it (CUDA; CPUs whose bf16 products are faster)
    seed: int = 42  # cell draw and null genes
    token_dictionary: str | None = None  # the model's dictionary when its folder has none (default: the tokens')

    def __post_init__(self) -> None:
        _rename_layer(self)
        if self.perturbation not in PERTURBATIONS:
            msg = f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}"
            raise InputError(msg)
        if isinstance(self.genes, str) and self.genes != "all":
            self.genes = [g for g in self.genes.split(",") if g]
        if self.goal_state is not None and self.state_column is None:
            msg = "goal_state needs state_column (the column holding each cell's state)"
            raise InputError(msg)
        if isinstance(self.alt_states, str):
            self.alt_states = [s for s in self.alt_states.split(",") if s]
        if not 0 < self.fraction <= 1 or min(self.batch_size, self.chunk_cells) < 1 or self.null_draws < 0:
            msg = (
                f"fraction must lie in (0, 1], batch_size and chunk_cells >= 1 and null_draws >= 0; got "
                f"{self.fraction}, {self.batch_size}, {self.chunk_cells} and {self.null_draws}"
            )
            raise InputError(msg)
        if self.device not in DEVICES:
            msg = f"device must be one of {DEVICES}, got {self.device!r}"
            raise InputError(msg)
        for name, allowed in (("similarity", SIMILARITIES), ("screen_model", SCREEN_MODELS)):
            if getattr(self, name) not in allowed:
                msg = f"{name} must be one of {allowed}, got {getattr(self, name)!r}"
                raise InputError(msg)


@dataclass
class NetworkConfig:
    """Settings of :func:`~stformer.network`, ``stformer network`` and the run's ``network`` section."""

    filter: dict[str, Any] | None = None  # {column: allowed value or values} of the cells used
    state_column: str | None = None  # column of the cell states (stformer run: label_column)
    states: list[str] | None = None  # two states: a network for each and the differential network between them
    genes: list[str] | None = None  # only these genes (ids, or symbols with gene_mapping); None: the most frequent
    layers: list[int] | None = None  # layers whose attention is averaged (0 the first, -1 the last); None: all
    heads: list[int] | None = None  # heads averaged in each layer; None: all
    max_cells: int | None = 1000  # at most this many cells (of each state), a seeded draw
    max_genes: int = 1000  # at most this many genes, the most frequent of those in min_cells cells or more
    min_cells: int = 10  # a gene, and an edge (both genes in one cell), needs this many cells
    top_edges: int = 10_000  # edges written (edges.csv, coexpression_edges.csv), the strongest first
    tested_edges: int = 500  # states: the edges of highest weight over both states get a differential test
    permutations: int = 20_000  # states: permutations of the cells' states in the differential test
    overlap_k: int = 100  # the summary's overlap of the k strongest attention and co-expression gene pairs
    input_files: list[str] | None = None  # h5ad/loom files of the co-expression baseline (None: the tokens' own)
    gene_mapping: dict[str, str] | str | None = None  # symbol -> Ensembl id (dict or file): symbols in and out
    batch_size: int = 16  # cells per forward pass (cells of similar length together)
    device: str = "auto"  # "auto" (CUDA when present, this rank's GPU under torchrun), "cpu" or "cuda"
    bf16: bool | None = None  # None: where the device is fast at it (CUDA; CPUs whose bf16 products are faster)
    seed: int = 42  # cell draw and permutations
    token_dictionary: str | None = None  # the model's dictionary when its folder has none (default: the tokens')

    def __post_init__(self) -> None:
        for name in ("states", "genes", "layers", "heads", "input_files"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [v for v in value.split(",") if v])
        for name in ("layers", "heads"):
            if getattr(self, name) is not None:
                setattr(self, name, [int(v) for v in getattr(self, name)])
        if self.states is not None and (self.state_column is None or len(self.states) != 2):
            given = f"state_column={self.state_column!r}, states={self.states}"
            msg = f"states needs state_column and exactly two states (A,B), got {given}"
            raise InputError(msg)
        if self.states is not None and self.states[0] == self.states[1]:
            msg = f"states must be two different states, got {self.states}"
            raise InputError(msg)
        counts = {
            n: getattr(self, n)
            for n in ("max_genes", "min_cells", "top_edges", "tested_edges", "permutations", "overlap_k", "batch_size")
        }
        if min(counts.values()) < 1 or self.max_genes < 2 or (self.max_cells is not None and self.max_cells < 2):
            given = counts | {"max_cells": self.max_cells}
            msg = f"max_genes and max_cells must be >= 2 and the other counts >= 1, got {given}"
            raise InputError(msg)
        if self.tested_edges > self.top_edges:
            msg = f"tested_edges ({self.tested_edges}) must not exceed top_edges ({self.top_edges})"
            raise InputError(msg)
        if self.device not in DEVICES:
            msg = f"device must be one of {DEVICES}, got {self.device!r}"
            raise InputError(msg)


def _rename_layer(config) -> None:
    """``layer`` (the name before 0.3) becomes ``hidden_layer``, with a warning."""
    if config.layer is None:
        return
    warnings.warn(
        f"{type(config).__name__}: 'layer' is deprecated and will be removed; call it 'hidden_layer' "
        f"(hidden_layer: {config.layer}); 'layer' now only names the AnnData matrix, in the input options",
        StformerWarning,
        stacklevel=4,
    )
    config.hidden_layer, config.layer = config.layer, None
