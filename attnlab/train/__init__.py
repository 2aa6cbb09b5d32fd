"""Training and evaluation of small ViTs (ViT, ReViT, CB) from scratch, resumable to the bit.

``attnlab.train.train(TrainConfig(model=..., dataset=...))`` is what ``attnlab train``
runs; ``evaluate_checkpoint`` is what ``attnlab evaluate`` runs. The config module loads
without torch (instant CLI validation); everything else loads on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import TrainConfig, read_config_file, resolve_config

_LAZY = {
    "train": "loop", "Trainer": "loop", "TrainResult": "loop", "NonFiniteLossError": "loop",
    "build_optimizer": "loop", "build_scheduler": "loop", "config_for_resume": "loop", "METRIC_COLUMNS": "loop",
    "EvalResult": "evaluate", "evaluate_batches": "evaluate", "evaluate_checkpoint": "evaluate",
    "write_per_class_csv": "evaluate",
    "TensorData": "data", "to_tensor_data": "data",
    "TensorAugment": "augment",
    "launch_local": "distributed",
    "write_fashion_mnist_idx": "synthetic",
}

__all__ = ["TrainConfig", "read_config_file", "resolve_config", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
