"""Which regularisation a run gets: the ``long`` recipe for long runs, ``short`` for quick ones.

Mixup, cutmix, RandAugment, label smoothing and drop-path at DeiT strength pay off over
tens of thousands of steps; in a run of a few hundred they only slow learning down (a
micro ViT on 5,000 Fashion-MNIST images for one epoch: 16.7% top-1 with them, 37.9%
without). ``recipe: auto`` (the default) therefore picks ``short`` when the run has fewer
than :data:`SHORT_RUN_STEPS` optimizer steps, else ``long``. A recipe only fills the
options the user left unset (``None``, or ``"auto"`` for ``randaugment``): an explicit
value always wins. Flips and padded crops are not part of either recipe (both keep them).
This module imports no torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from .config import AUTO, RECIPE_CHOICES, TrainConfig

#: Runs with fewer optimizer steps than this get the ``short`` recipe under ``recipe: auto``.
SHORT_RUN_STEPS = 2000

#: What each recipe sets (for the options the user did not set).
RECIPES: Dict[str, Dict[str, Any]] = {
    "long": {"label_smoothing": 0.1, "drop_path": 0.1, "randaugment": "rand-m9-n2", "mixup": 0.8, "cutmix": 1.0},
    "short": {"label_smoothing": 0.0, "drop_path": 0.0, "randaugment": None, "mixup": 0.0, "cutmix": 0.0},
}
assert set(RECIPES) | {AUTO} == set(RECIPE_CHOICES)

_SUMMARY = {
    "long": "mixup 0.8, cutmix 1.0, RandAugment rand-m9-n2, label smoothing 0.1, drop-path 0.1",
    "short": "no mixup/cutmix/RandAugment, label smoothing 0, drop-path 0 (flips and crops kept)",
}


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe a run got, why, and which of its settings the user's own options replaced."""

    name: str
    steps: int
    reason: str
    user_set: Tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the start of a run: ``recipe: short (78 steps < 2000): no mixup/...``."""
        kept = f"; your own {', '.join(self.user_set)} kept" if self.user_set else ""
        return f"recipe: {self.name} ({self.reason}): {_SUMMARY[self.name]}{kept}"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "reason": self.reason, "user_set": list(self.user_set)}


def planned_steps(config: TrainConfig, train_images: int) -> int:
    """Optimizer steps of the run: epochs x (train images // global batch)."""
    return config.epochs * (train_images // max(1, min(config.batch_size, train_images)))


#: How each option says "unset": None, except randaugment, where None means off.
UNSET: Dict[str, Any] = {"label_smoothing": None, "drop_path": None, "randaugment": AUTO, "mixup": None,
                         "cutmix": None}
assert set(UNSET) == set(RECIPES["long"]) == set(RECIPES["short"])


def left_to_recipe(config: TrainConfig) -> List[str]:
    """The recipe options this config leaves unset."""
    return [k for k, unset in UNSET.items() if getattr(config, k) == unset]


def apply_recipe(config: TrainConfig, train_images: int) -> Tuple[TrainConfig, RecipeChoice]:
    """A copy of ``config`` with the recipe's values in the options left unset, and the choice.

    The copy names the recipe it got (``recipe: short``), so it describes the run
    completely: training again from it gives the same run.
    """
    steps = planned_steps(config, train_images)
    if config.recipe == AUTO:
        name = "short" if steps < SHORT_RUN_STEPS else "long"
        reason = f"{steps} steps {'<' if name == 'short' else '>='} {SHORT_RUN_STEPS}"
    else:
        name, reason = config.recipe, f"chosen explicitly; {steps} steps"
    unset = left_to_recipe(config)
    user_set = tuple(k for k in RECIPES[name] if k not in unset and getattr(config, k) != RECIPES[name][k])
    filled = dataclasses.replace(config, recipe=name, **{k: RECIPES[name][k] for k in unset})
    return filled, RecipeChoice(name, steps, reason, user_set)
