"""Settings of the pretraining stage (no heavy imports: the CLI builds its options from it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain` and ``stformer pretrain`` (defaults follow Geneformer's recipe)."""

    num_layers: int = 6  # transformer layers
    hidden_size: int = 256  # embedding width
    num_heads: int = 4  # attention heads (hidden_size must be a multiple)
    intermediate_size: int = 512  # feed-forward width
    activation: str = "relu"
    max_length: int | None = None  # position embeddings; None: 2048, 4096 for neighborhood data
    hidden_dropout: float = 0.02
    attention_dropout: float = 0.0  # > 0 forces the slow unfused attention path
    batch_size: int = 12  # per device
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler: str = "linear"
    warmup_steps: int = 10_000  # capped to a tenth of the run
    weight_decay: float = 0.001
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    mlm_probability: float = 0.15
    seed: int = 42
    group_by_length: bool = True  # batches of similar length (less padding)
    bf16: bool | None = None  # None: on where bf16 is fast (CUDA with bf16, CPUs with AMX or AVX512-BF16)
    gradient_checkpointing: bool = False
    eval_fraction: float = 0.0  # held-out share of cells for eval loss
    eval_steps: int = 500
    logging_steps: int = 50
    save_steps: int = 1000  # checkpoint interval (for --resume)
    save_total_limit: int = 2
    run_name: str = "pretrain"
    deepspeed: str | None = None  # DeepSpeed JSON config (needs deepspeed installed)
    dataloader_num_workers: int = 0
