"""Run each model once over the images and gather what the page shows, as compact arrays.

One ``run_with_cache`` pass per batch captures every block's applied attention (and, for
ReViT, its own softmax(S_l)). From it come:

- the rows of the stored blocks (``plan.layers``), per head and the mean over heads,
  quantised (``quantise.py``: uint8 with a per-row scale);
- per block, head and query the mean attention distance (pixels, patch queries; NaN for
  prefix queries, which have no position) and the entropy (nats, all ``N`` keys), with
  the metrics' kernels; the per-image values are their means over queries, the same
  numbers ``mean_attention_distance_per_image`` and ``attention_entropy_per_image``
  give. Head index ``H`` (one past the last head) holds the mean over heads of the
  per-head values, as attnlab's tables do;
- attention rollout from the same captured maps (``attention_rollout``'s map, without a
  second pass) and GradCAM of the predicted class (``compute_cam``, target layer auto).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch

from ..capture import run_with_cache
from ..data.transforms import normalize
from ..errors import AttnlabError
from ..metrics.kernels import patch_block, patch_distances, renorm_rows, row_entropy, weighted_distance
from ..studies.attribution import auto_layer, compute_cam, rollout
from ..studies.attribution.rollout import query_map
from .plan import ModelPlan
from .quantise import quantise_rows


@dataclass
class Rows:
    """Quantised rows of the stored blocks: ``q [n, K, H+1, N, G]``, ``scale`` and ``prefix`` keys."""

    q: np.ndarray
    scale: np.ndarray     # [n, K, H+1, N] float32
    prefix: np.ndarray    # [n, K, H+1, N, P] float32


@dataclass
class Metrics:
    """Per-block metrics of one attention kind: per query ``[n, L, H+1, N]`` and per image ``[n, L, H+1]``."""

    query_mad: np.ndarray
    query_entropy: np.ndarray
    image_mad: np.ndarray
    image_entropy: np.ndarray


@dataclass
class ModelView:
    """Everything the page shows of one model on the images."""

    plan: ModelPlan
    classes: List[str]
    probabilities: np.ndarray                 # [n, classes]
    rows: Dict[str, Rows]                     # attention kind -> rows
    metrics: Dict[str, Metrics]               # attention kind -> metrics
    uniform_query_mad: np.ndarray             # [N]: mean_j d_ij of a uniform row (NaN for prefix queries)
    uniform_entropy: float                    # log N
    rollout: np.ndarray                       # [n, gh, gw] raw rollout mass
    gradcam: np.ndarray                       # [n, h, w] in [0, 1]
    cam_layer: str

    @property
    def label(self) -> str:
        return self.plan.label

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def uniform_image_mad(self) -> float:
        """Mean attention distance of uniform attention over the whole image (mean over patch queries)."""
        return float(np.nanmean(self.uniform_query_mad))


def query_metrics(attn: torch.Tensor, plan: ModelPlan) -> tuple:
    """``(mad [B, H+1, N], entropy [B, H+1, N])`` of ``[B, H, N, N]`` attention, float64."""
    a = attn.to(torch.float64)
    lay = plan.layout
    entropy = row_entropy(a)                                          # H_i = -sum_j A_ij log A_ij
    block, mass = patch_block(a, lay)
    dist = patch_distances(lay, a.device, pixels=True, dtype=a.dtype)
    mad_patch = renorm_rows(weighted_distance(block, dist), mass)     # sum_j A~_ij d_ij per patch query
    mad = torch.full_like(entropy, math.nan)
    mad[..., lay.num_prefix_tokens:] = mad_patch
    # the mean over heads of the per-head values (index H)
    return (torch.cat([mad, mad.mean(1, keepdim=True)], 1), torch.cat([entropy, entropy.mean(1, keepdim=True)], 1))


def _with_mean(attn: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, N]`` -> ``[B, H+1, N, N]``: the heads, then their mean row (the map the page shows for 'mean')."""
    return torch.cat([attn, attn.mean(1, keepdim=True)], 1)


def collect_model(plan: ModelPlan, pixels: torch.Tensor, device: torch.device, batch_size: int = 8) -> ModelView:
    """Run ``plan``'s model on ``pixels`` (``[n, C, h, w]`` in [0, 1]) and gather its view."""
    m = plan.model
    net = m.model.to(device).eval()
    x = normalize(pixels, m.spec.input)
    lay, kinds = plan.layout, plan.sources
    points = [name for kind in kinds for name in plan.points[kind]]
    shape = (plan.heads, lay.num_tokens, lay.num_tokens)
    parts: Dict[str, Dict[str, List]] = {k: {n: [] for n in ("q", "s", "p", "mq", "eq")} for k in kinds}
    probs, maps = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            logits, cache = run_with_cache(net, xb, points)
            probs.append(logits.float().softmax(-1).cpu())
            for kind in kinds:
                stack = [cache[name] for name in plan.points[kind]]
                if any(tuple(a.shape[1:]) != shape for a in stack):
                    raise AttnlabError(f"{m.label}: attention of shape {tuple(stack[0].shape)} does not fit its "
                                       f"layout ({lay.num_prefix_tokens} prefix + {lay.num_patches} patch tokens)")
                if any(not torch.isfinite(a).all() for a in stack):
                    raise AttnlabError(f"{m.label}: the model gives non-finite attention (NaN or inf weights?)")
                qs = [quantise_rows(_with_mean(stack[i]), lay.num_prefix_tokens) for i in plan.layers]
                for name, k in (("q", 0), ("s", 1), ("p", 2)):
                    parts[kind][name].append(np.stack([t[k] for t in qs], axis=1))      # [b, K, H+1, ...]
                per_layer = [query_metrics(a, plan) for a in stack]
                parts[kind]["mq"].append(torch.stack([t[0] for t in per_layer], 1).cpu())  # [b, L, H+1, N]
                parts[kind]["eq"].append(torch.stack([t[1] for t in per_layer], 1).cpu())
                if kind == "applied":
                    maps.append(query_map(rollout(stack), net, lay).cpu())   # attention_rollout's map
            del cache
    probabilities = torch.cat(probs).numpy()
    classes = [str(c) for c in m.spec.classes] or [str(i) for i in range(probabilities.shape[1])]
    if len(classes) != probabilities.shape[1]:
        classes = [str(i) for i in range(probabilities.shape[1])]
    rows, metrics = {}, {}
    for kind in kinds:
        pk = parts[kind]
        rows[kind] = Rows(np.concatenate(pk["q"]), np.concatenate(pk["s"]), np.concatenate(pk["p"]))
        mq, eq = torch.cat(pk["mq"]), torch.cat(pk["eq"])
        metrics[kind] = Metrics(query_mad=mq.float().numpy(), query_entropy=eq.float().numpy(),
                                image_mad=mq[..., lay.num_prefix_tokens:].mean(-1).float().numpy(),
                                image_entropy=eq.mean(-1).float().numpy())
    uniform = torch.full((lay.num_tokens,), math.nan, dtype=torch.float64)
    uniform[lay.num_prefix_tokens:] = patch_distances(lay, torch.device("cpu"), pixels=True).mean(-1)  # mean_j d_ij
    layer = auto_layer(net)
    try:
        cam = compute_cam(net, x, "gradcam", probabilities.argmax(1).tolist(), layer=layer, batch_size=batch_size)
    except AttnlabError as e:
        raise AttnlabError(f"{m.label}: {e}") from (e.__cause__ or e)
    return ModelView(plan=plan, classes=classes, probabilities=probabilities, rows=rows, metrics=metrics,
                     uniform_query_mad=uniform.numpy(), uniform_entropy=math.log(lay.num_tokens),
                     rollout=torch.cat(maps).double().numpy(), gradcam=cam, cam_layer=layer)
