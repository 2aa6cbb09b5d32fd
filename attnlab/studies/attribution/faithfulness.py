"""Is a map faithful? pytorch-grad-cam's ROAD and confidence-drop metrics, per image.

All on the softmax probability of the target class (``ClassifierOutputSoftmaxTarget``):

    road_most_relevant_first   ROAD, mean over percentiles of p(removed most relevant) - p(x)
    road_least_relevant_first  ROAD, mean over percentiles of p(removed least relevant) - p(x)
    road_combined              (least - most) / 2, higher = more faithful
    confidence_drop            p(x) - p(x * map), positive when masking by the map lowers it

ROAD ranks pixels by the map; ties (CAMs have many exact zeros) are broken by a fixed
jitter of 1e-6, since pytorch-grad-cam's percentile threshold would otherwise remove
every pixel and its linear imputation becomes singular. ROAD's imputation noise is
seeded, so the numbers are reproducible. The curve protocols (Chefer's perturbation, RISE
deletion / insertion) are in ``perturbation.py``.
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
    """ROAD (most / least relevant first, combined) and confidence drop per image, in probability units.

    The perturbed images are pytorch-grad-cam's (``RemoveMostRelevantFirst`` /
    ``RemoveLeastRelevantFirst`` with its ``NoisyLinearImputer``, and ``x * map``), made in
    the order its metrics make them; what is batched is the model: the unperturbed images
    are scored once (not once per percentile and metric), and every perturbed copy of a
    batch goes through the model together, in forward passes of ``4 * batch_size`` images.
    """
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    device = model_device(model)
    ranked = maps + TIE_JITTER * np.random.default_rng(seed).random(maps.shape, dtype=np.float32)
    removers = [RemoveMostRelevantFirst(p, NoisyLinearImputer()) for p in percentiles] + \
               [RemoveLeastRelevantFirst(p, NoisyLinearImputer()) for p in percentiles]
    k = len(percentiles)
    parts: Dict[str, List[np.ndarray]] = {"morf": [], "lerf": [], "change": []}
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a singular imputation shows up as NaN, reported by the caller
            torch.manual_seed(seed)
            for start in range(0, len(x), batch_size):
                sl = slice(start, start + batch_size)
                xb = x[sl].detach().cpu()
                views = [xb]
                for remove in removers:  # percentile by percentile, image by image: the imputer's noise order
                    views.append(torch.stack([remove(img, torch.from_numpy(r)) for img, r in zip(xb, ranked[sl])]))
                views.append(xb * torch.from_numpy(maps[sl])[:, None])  # CamMultImageConfidenceChange: x * map
                p = _target_probabilities(model, torch.cat(views), targets[sl], device, 4 * batch_size)
                base = p[0]
                # ROAD averages over percentiles of p(perturbed) - p(x), in float32 as pytorch-grad-cam does
                parts["morf"].append((p[1:1 + k] - base).mean(axis=0).astype(np.float64))
                parts["lerf"].append((p[1 + k:1 + 2 * k] - base).mean(axis=0).astype(np.float64))
                parts["change"].append((p[-1] - base).astype(np.float64))
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(f"ROAD / confidence metrics failed: {type(e).__name__}: {one_line(e)}") from e
    morf, lerf, change = (np.concatenate(parts[k]) for k in ("morf", "lerf", "change"))
    return {"road_most_relevant_first": morf, "road_least_relevant_first": lerf,
            "road_combined": (lerf - morf) / 2, "confidence_drop": -change}


def _target_probabilities(model: nn.Module, views: torch.Tensor, targets: Sequence[int], device: torch.device,
                          chunk: int) -> np.ndarray:
    """``[views, n]`` float32 softmax probability of each image's target class, for ``views`` stacked
    view-major (``n`` images per view), in forward passes of at most ``chunk`` images."""
    n = len(targets)
    with torch.no_grad():
        probs = torch.cat([model(views[s:s + chunk].to(device)).float().softmax(dim=-1).cpu()
                           for s in range(0, len(views), chunk)])
    t = torch.as_tensor(list(targets), dtype=torch.int64).repeat(len(views) // n)
    return probs.gather(1, t[:, None])[:, 0].reshape(-1, n).numpy().astype(np.float32)
