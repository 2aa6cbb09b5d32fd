"""Training and evaluation of small ViTs (ViT, ReViT, CB) from scratch, resumable to the bit.

``attnlab.train.train(TrainConfig(model=..., dataset=...))`` is what ``attnlab train``
runs; ``evaluate_checkpoint`` is what ``attnlab evaluate`` runs. The config and recipe
modules load without torch (instant CLI validation); everything else loads on first use.

Imports flow one way: launch -> loop -> (plan, optim, recipe, records, run_folder,
evaluate, loader, accel, progress) -> (distributed, augment, data, state, config).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

from .._lazy import lazy_exports
from .config import TrainConfig, read_config_file, resolve_config

_LAZY = {
    "train": "loop", "Trainer": "loop", "TrainResult": "records", "NonFiniteLossError": "loop",
    "build_optimizer": "optim", "build_scheduler": "optim", "WarmupCosine": "optim",
    "config_for_resume": "run_folder", "METRIC_COLUMNS": "records", "EpochTally": "records",
    "apply_recipe": "recipe", "RecipeChoice": "recipe", "SHORT_RUN_STEPS": "recipe",
    "EvalResult": "evaluate", "evaluate_batches": "evaluate", "evaluate_checkpoint": "evaluate",
    "save_per_class_accuracy": "evaluate",
    "TensorData": "data", "to_tensor_data": "data", "normalize_uint8": "data",
    "TensorAugment": "augment",
    "launch_local": "launch",
    "write_fashion_mnist_idx": "synthetic",
}

__all__ = ["TrainConfig", "read_config_file", "resolve_config", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


class _CallableModule(type(importlib)):
    """``attnlab.train(config)`` trains, as ``attnlab.train.train(config)`` does: the package is the API name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
