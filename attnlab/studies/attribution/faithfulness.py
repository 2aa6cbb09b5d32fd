"""Is a map faithful? pytorch-grad-cam's ROAD and confidence-drop metrics, per image.

All on the softmax probability of the target class (``ClassifierOutputSoftmaxTarget``):

    road_most_relevant_first   ROAD, mean over percentiles of p(removed most relevant) - p(x)
    road_least_relevant_first  ROAD, mean over percentiles of p(removed least relevant) - p(x)
    road_combined              (least - most) / 2, higher = more faithful
    confidence_drop            p(x) - p(x * map), positive when masking by the map lowers it

ROAD ranks pixels by the map; ties (CAMs have many exact zeros) are broken by a fixed
jitter of 1e-6, since pytorch-grad-cam's percentile threshold would otherwise remove
every pixel and its linear imputation becomes singular. ROAD's imputation noise is
seeded, so the numbers are reproducible.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from ...devices import model_device
from ...errors import AttnlabError, one_line

METRICS = ("road_most_relevant_first", "road_least_relevant_first", "road_combined", "confidence_drop")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
TIE_JITTER = 1e-6


def attribution_metrics(
    model: nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int],
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    batch_size: int = 16,
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """ROAD (most / least relevant first, combined) and confidence drop per image, in probability units."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    device = model_device(model)
    ranked = maps + TIE_JITTER * np.random.default_rng(seed).random(maps.shape, dtype=np.float32)
    morf_metric = ROADMostRelevantFirstAverage(list(percentiles))
    lerf_metric = ROADLeastRelevantFirstAverage(list(percentiles))
    change_metric = CamMultImageConfidenceChange()   # p(x * map) - p(x)
    parts: Dict[str, List[np.ndarray]] = {"morf": [], "lerf": [], "change": []}

    def per_image(values) -> np.ndarray:  # noqa: ANN001
        return np.asarray(values, dtype=np.float64).reshape(-1)

    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a singular imputation shows up as NaN, reported by the caller
            torch.manual_seed(seed)
            for start in range(0, len(x), batch_size):
                sl = slice(start, start + batch_size)
                xb = x[sl].to(device)
                tb = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets[sl]]
                parts["morf"].append(per_image(morf_metric(xb, ranked[sl], tb, model)))
                parts["lerf"].append(per_image(lerf_metric(xb, ranked[sl], tb, model)))
                parts["change"].append(per_image(change_metric(xb, maps[sl], tb, model)))
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(f"ROAD / confidence metrics failed: {type(e).__name__}: {one_line(e)}") from e
    morf, lerf, change = (np.concatenate(parts[k]) for k in ("morf", "lerf", "change"))
    return {"road_most_relevant_first": morf, "road_least_relevant_first": lerf,
            "road_combined": (lerf - morf) / 2, "confidence_drop": -change}
