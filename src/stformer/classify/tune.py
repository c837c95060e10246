"""Ray Tune hyperparameter search for GenericClassifier (needs ``pip install 'stformer[tune]'``)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from transformers import TrainingArguments

from .._config import choose_closest
from .._errors import InputError

METRIC, MODE = "macro_f1", "max"


def _require_ray():
    try:
        import ray
        from ray import tune
    except ImportError as err:  # pragma: no cover - depends on the installation
        msg = "hyperparameter search needs Ray Tune: pip install 'stformer[tune]'"
        raise ImportError(msg) from err
    return ray, tune


def search_space(ray_config: dict) -> dict:
    """Ray search space from ``ray_config``.

    Ray domains pass through, lists become choices, ``(low, high)`` tuples become log-uniform
    (learning rates) or uniform ranges.

    Keys must be ``TrainingArguments`` fields; near misses raise with a suggestion.
    """
    _, tune = _require_ray()
    fields = [f.name for f in dataclasses.fields(TrainingArguments)]
    space = {}
    for key, value in ray_config.items():
        if key not in fields:
            msg = f"ray_config key {key!r} is not a TrainingArguments field"
            try:
                msg += f"; did you mean {choose_closest(key, fields)!r}?"
            except ValueError:
                pass
            raise InputError(msg)
        if isinstance(value, list):
            space[key] = tune.choice(value)
        elif isinstance(value, tuple) and len(value) == 2:
            space[key] = tune.loguniform(*value) if "learning_rate" in key else tune.uniform(*value)
        else:
            space[key] = value
    return space


def trial_resources(requested: dict | None) -> dict[str, float]:
    """Ray resources of one trial: ``requested``, else one GPU (and one CPU) when CUDA is present, else one CPU.

    >>> trial_resources({"cpu": 2})
    {'cpu': 2}
    """
    import torch

    if requested is None:
        return {"cpu": 1, "gpu": 1} if torch.cuda.is_available() else {"cpu": 1}
    unknown = sorted(set(requested) - {"cpu", "gpu"})
    if unknown or any(v < 0 for v in requested.values()):
        msg = f"resources_per_trial takes non-negative 'cpu' and 'gpu' counts, got {requested}"
        raise InputError(msg)
    return dict(requested)


def run_ray_tune(
    make_trainer: Callable, ray_config: dict | None, out: Path, n_trials: int, resources: dict | None = None
):
    """Train ``n_trials`` models, each evaluated on its Trainer's eval set (macro-F1); keep the best.

    ``make_trainer(trial_dir, overrides)`` returns a ``Trainer`` whose ``TrainingArguments`` take
    ``overrides`` (the trial's hyperparameters drawn from ``ray_config``). Each trial gets
    :func:`trial_resources` (``resources``). The best trial's model is copied to
    ``out/best_model``. Returns Ray's ``ResultGrid``.
    """
    if not ray_config:
        msg = "n_trials > 0 needs ray_config (the hyperparameters to search)"
        raise InputError(msg)
    ray, tune = _require_ray()
    space = search_space(ray_config)
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)

    def trial(config):
        trial_dir = Path(tune.get_context().get_trial_dir())
        trainer = make_trainer(trial_dir, {**config, "disable_tqdm": True})
        trainer.train()
        metrics = trainer.evaluate()
        trainer.save_model(str(trial_dir / "model"))
        tune.report({METRIC: metrics[f"eval_{METRIC}"], "eval_loss": metrics["eval_loss"]})

    trainable = tune.with_resources(trial, trial_resources(resources))
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=n_trials, metric=METRIC, mode=MODE),
        run_config=tune.RunConfig(name="ray_tune", storage_path=str(out.resolve()), verbose=0),
    )
    results = tuner.fit()
    best = results.get_best_result(metric=METRIC, mode=MODE)
    if best.error:
        msg = f"every Ray Tune trial failed; first error: {best.error}"
        raise RuntimeError(msg)
    best_model = out / "best_model"
    shutil.rmtree(best_model, ignore_errors=True)
    shutil.copytree(Path(best.path) / "model", best_model)
    return tune.ExperimentAnalysis(results.experiment_path, default_metric=METRIC, default_mode=MODE)
