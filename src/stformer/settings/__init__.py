"""Settings: one typed dataclass per stage, shared by the Python API, the CLI and ``stformer run``.

Each field's comment is its documentation: the CLI shows it as the option's help and the docs'
settings reference lists it. Every dataclass checks its values in ``__post_init__``, so a settings
object that exists is a valid one. This module imports nothing heavy (the CLI builds its options
from it before torch loads).
"""

from ._run import RunConfig, load_run_config, settings_reference
from ._stages import (
    CLASSIFIER_TYPES,
    DEVICES,
    PERTURBATIONS,
    POOLINGS,
    SCREEN_MODELS,
    SIMILARITIES,
    ClassifyConfig,
    EmbedConfig,
    InputOptions,
    MediansConfig,
    NetworkConfig,
    PerturbConfig,
    PretrainConfig,
    TokenizerConfig,
)

__all__ = [
    "CLASSIFIER_TYPES",
    "DEVICES",
    "PERTURBATIONS",
    "POOLINGS",
    "SCREEN_MODELS",
    "SIMILARITIES",
    "ClassifyConfig",
    "EmbedConfig",
    "InputOptions",
    "MediansConfig",
    "NetworkConfig",
    "PerturbConfig",
    "PretrainConfig",
    "RunConfig",
    "TokenizerConfig",
    "load_run_config",
    "settings_reference",
]
