"""What a robustness run measures per image, and the tidy summary with bootstrap intervals.

Metrics per model and condition (``metric`` column of robustness.csv):

    accuracy       top-1 equal to the label (labelled images only)
    consistency    top-1 equal to the reference view's (the unshifted image's) top-1
    prob_change    mean |p_c(view) - p_c(reference)| over images, where c is the image's
                   label on labelled data, and the reference view's top-1 class on
                   label-free runs (loose images, or a dataset whose classes are not the
                   model's): how much confidence in the same class the transform costs
    js_divergence  Jensen-Shannon divergence of the two output distributions (nats, <= log 2)

Each value is the mean over images with a percentile bootstrap 95% interval
(``scipy.stats.bootstrap``).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .conditions import Condition

METRICS = ("accuracy", "consistency", "prob_change", "js_divergence")

# scipy >= 1.15 takes the generator as ``rng``; older versions as ``random_state``
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass
class Outcome:
    """Per-image results of one model under one condition (numpy arrays over images, NaN: not measured)."""

    correct: np.ndarray
    consistent: np.ndarray
    prob_change: np.ndarray
    js: np.ndarray

    def by_metric(self) -> Dict[str, np.ndarray]:
        """Metric name (:data:`METRICS`) -> per-image values."""
        return dict(zip(METRICS, (self.correct, self.consistent, self.prob_change, self.js)))

    @classmethod
    def concatenate(cls, parts: Sequence["Outcome"]) -> "Outcome":
        """One outcome over the images of every part, in order."""
        fields = ("correct", "consistent", "prob_change", "js")
        return cls(*(np.concatenate([getattr(o, f) for o in parts]) for f in fields))


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2, over the last axis (nats).

    Written with ``xlogy`` (0 log 0 = 0) rather than scipy's ``jensenshannon``, which returns
    the square root and turns a rounding-negative divergence of two equal outputs into NaN.
    """
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # KL(a || b) = sum a log a - a log b
        return (torch.special.xlogy(a, a) - torch.special.xlogy(a, b)).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def outcome(probs: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor, use_labels: bool = True) -> Outcome:
    """Per-image metrics of the softmax outputs ``probs`` of a view against those of the reference.

    With ``use_labels`` an image's label (-1: none) defines accuracy and the class of
    ``prob_change``; without, accuracy is not measured (NaN) and ``prob_change`` follows the
    reference's top-1 class.
    """
    pred, ref_pred = probs.argmax(-1), reference.argmax(-1)
    nan = torch.full(pred.shape, math.nan, dtype=torch.float64)
    if use_labels:
        labelled = labels >= 0
        cls = labels.clamp_min(0)
    else:
        labelled = torch.zeros_like(pred, dtype=torch.bool)
        cls = ref_pred
    p_cls = probs.gather(1, cls[:, None])[:, 0]        # p_c(view)
    r_cls = reference.gather(1, cls[:, None])[:, 0]    # p_c(reference)
    change = (p_cls - r_cls).abs().double()
    return Outcome(
        correct=torch.where(labelled, (pred == labels).double(), nan).numpy(),
        consistent=(pred == ref_pred).double().numpy(),
        prob_change=(torch.where(labelled, change, nan) if use_labels else change).numpy(),
        js=js_divergence(probs.double(), reference.double()).numpy(),
    )


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean over images (NaNs ignored; one value v -> (v, v))."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), float(v[0])
    res = stats.bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                          vectorized=True, **{_RNG_KEYWORD: np.random.default_rng(seed)})
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(outcomes: Dict[Condition, Outcome], model: str, checkpoint: str, arch: str,
              n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Tidy rows (``attnlab.tables`` schema) of every measured metric under every condition."""
    rows = []
    for cond, out in outcomes.items():
        for metric, values in out.by_metric().items():
            v = values[~np.isnan(values)]
            if len(v) == 0:  # not measured (accuracy without labels)
                continue
            lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            rows.append(dict(model=model, checkpoint=checkpoint, arch=arch, transform=cond.transform,
                             magnitude=cond.magnitude, magnitude_y=cond.magnitude_y, metric=metric,
                             value=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                             ci_low=lo, ci_high=hi, n_images=len(v)))
    return pd.DataFrame(rows)
