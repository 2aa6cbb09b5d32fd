"""The optimizer and its schedule: AdamW without decay on 1-D weights, per-step warm-up + cosine."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


class WarmupCosine:
    """LR multiplier per optimizer step: linear warm-up to 1, then cosine down to ``min_ratio``.

    A plain object with plain attributes, so LambdaLR's state dict stays weights_only-safe.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        # m(t) = r + (1 - r) * (1 + cos(pi * t)) / 2, t in [0, 1] after the warm-up
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, config: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW with two groups: decayed weights, and everything timm says must not decay
    (1-D parameters: norms, biases, ReViT's ``a``; plus ``model.no_weight_decay()``).
    ``fused`` (CUDA parameters only) runs the update as one kernel."""
    from timm.optim import param_groups_weight_decay

    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups = param_groups_weight_decay(model, weight_decay=config.weight_decay, no_weight_decay_list=skip)
    extra = {"fused": True} if fused else {}  # unset otherwise: torch's default, as before
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine; the warm-up is at most a fifth of the run."""
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total // 5)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, config.min_lr / config.lr))
