"""Run each model once over the images and gather what the page shows, as compact arrays.

One ``run_with_cache`` pass per batch captures every layer's attention (and, for ReViT,
its own softmax(S_l)); each map ``[B * windows, heads, Nq, Nk]`` is read as
``[B, windows, heads, Nq, Nk]`` with the positions its layer's geometry gives
(``layers.py``). From it come:

- the rows of the stored layers (``plan.layers``), per head and the mean over heads, one
  row per query of every window (row ``w * Nq + i``), quantised (``quantise.py``: uint8
  over the keys with a position, a per-row scale, prefix keys as float32);
- per layer, head and query the mean attention distance (pixels)

      mad_i = sum_j A_ij d_ij / sum_j A_ij      over the keys j with a position

  (NaN for a query without one: prefix tokens, class attention) and the entropy
  ``H_i = -sum_j A_ij log A_ij`` (nats, all keys); the per-image values are their means
  over queries (with a position, for the distance), the numbers
  ``mean_attention_distance_per_image`` / ``attention_entropy_per_image`` (one grid) and
  ``attnlab.metrics.geometric.per_image`` (windows, pooled grids) give. Head index ``H``
  (one past the last head) holds the mean over heads of the per-head values, as attnlab's
  tables do;
- attention rollout from the same captured maps (``attention_rollout``'s map, without a
  second pass) and GradCAM of the predicted class (``compute_cam``), where the model has
  them (``plan.missing`` says why not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..capture import run_with_cache
from ..data.transforms import normalize
from ..errors import AttnlabError
from ..studies.attribution import compute_cam, rollout
from ..studies.attribution.rollout import query_map
from .layers import AttentionLayer
from .plan import APPLIED, ModelPlan
from .quantise import quantise_rows


@dataclass
class Rows:
    """Quantised rows of one stored layer: ``q [n, H+1, R, K - P]``, ``scale [n, H+1, R]``, ``prefix`` keys."""

    q: np.ndarray
    scale: np.ndarray     # float32
    prefix: np.ndarray    # [n, H+1, R, P] float32


@dataclass
class Metrics:
    """Per-layer metrics of one attention kind, lists over layers: per query ``[n, H+1, R]``, per image ``[n, H+1]``."""

    query_mad: List[np.ndarray]
    query_entropy: List[np.ndarray]
    image_mad: List[np.ndarray]
    image_entropy: List[np.ndarray]


@dataclass
class ModelView:
    """Everything the page shows of one model on the images."""

    plan: ModelPlan
    classes: List[str]
    probabilities: np.ndarray                 # [n, classes]
    rows: Dict[str, List[Rows]]               # attention kind -> rows of each stored layer
    metrics: Dict[str, Metrics]               # attention kind -> metrics
    rollout: Optional[np.ndarray]             # [n, gh, gw] raw rollout mass (None: plan.missing["rollout"])
    gradcam: Optional[np.ndarray]             # [n, h, w] in [0, 1] (None: plan.missing["gradcam"])

    @property
    def label(self) -> str:
        return self.plan.label

    @property
    def cam_layer(self) -> Optional[str]:
        return self.plan.cam_layer

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


class _Where:
    """A layer's distances ``[W, Nq, Nk]`` (0 where a token has no position) and masks, on the device."""

    def __init__(self, layer: AttentionLayer, device: torch.device) -> None:
        g = layer.where
        self.d = torch.nan_to_num(g.distances()).to(device)
        self.keys = g.key_present().to(device=device, dtype=torch.float64)                   # [W, Nk]
        self.queries = (~torch.isnan(g.query_pos).any(-1)).to(device)                        # [W, Nq]
        drawn = g.key_present().clone()
        drawn[:, :layer.prefix_keys] = True                                     # prefix keys: kept as float
        self.drawn = None if bool(drawn.all()) else drawn.to(device)            # Swin's padding: not drawn


def query_metrics(a: torch.Tensor, where: _Where) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mad, entropy)`` ``[B, H+1, W * Nq]`` float64 of ``[B, W, H, Nq, Nk]`` attention (module docstring)."""
    a = a.to(torch.float64)
    mass = torch.einsum("bwhqk,wk->bwhq", a, where.keys)                     # sum_j A_ij over keys with a position
    mad = torch.einsum("bwhqk,wqk->bwhq", a, where.d) / mass.clamp_min(1e-300)
    mad = mad.masked_fill(~where.queries[None, :, None, :], float("nan"))
    entropy = -torch.special.xlogy(a, a).sum(-1)                             # H_i = -sum_j A_ij log A_ij
    flat = [t.permute(0, 2, 1, 3).flatten(2) for t in (mad, entropy)]          # row w * Nq + i
    return tuple(torch.cat([t, t.mean(1, keepdim=True)], 1) for t in flat)  # type: ignore[return-value]


def layer_rows(a: torch.Tensor, layer: AttentionLayer, where: _Where) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[B, W, H, Nq, Nk]`` -> quantised ``[B, H+1, W * Nq, ...]``: the heads, then their mean row."""
    if where.drawn is not None:
        a = a * where.drawn[None, :, None, None, :]
    rows = a.permute(0, 2, 1, 3, 4).flatten(2, 3)                            # [B, H, W * Nq, Nk]
    return quantise_rows(torch.cat([rows, rows.mean(1, keepdim=True)], 1), layer.prefix_keys)


def _attention(cache, name: str, layer: AttentionLayer, b: int, label: str) -> torch.Tensor:
    a = cache[name]
    shape = (b * layer.windows, layer.heads, layer.queries, layer.keys)
    if tuple(a.shape) != shape:
        raise AttnlabError(f"{label}: attention of shape {tuple(a.shape)} at {name} does not fit its layer {shape}")
    if not torch.isfinite(a).all():
        raise AttnlabError(f"{label}: the model gives non-finite attention (NaN or inf weights?)")
    return a.reshape(b, layer.windows, *shape[1:])


def collect_model(plan: ModelPlan, pixels: torch.Tensor, device: torch.device, batch_size: int = 8) -> ModelView:
    """Run ``plan``'s model on ``pixels`` (``[n, C, h, w]`` in [0, 1]) and gather its view."""
    m = plan.model
    net = m.model.to(device).eval()
    x = normalize(pixels, m.spec.input)
    kinds, blocks, stored = plan.sources, plan.blocks, plan.layers
    where = [_Where(b, device) for b in blocks]
    points = [name for kind in kinds for name in plan.points[kind]]
    rows: Dict[str, List[List]] = {k: [[] for _ in stored] for k in kinds}
    mets: Dict[str, List[List]] = {k: [[] for _ in blocks] for k in kinds}
    probs, maps = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            logits, cache = run_with_cache(net, xb, points)
            probs.append(logits.float().softmax(-1).cpu())
            for kind in kinds:
                stack = [_attention(cache, n, b, len(xb), m.label) for n, b in zip(plan.points[kind], blocks)]
                for k, layer in enumerate(stored):
                    rows[kind][k].append(layer_rows(stack[layer], blocks[layer], where[layer]))
                for layer, a in enumerate(stack):
                    mets[kind][layer].append([t.cpu() for t in query_metrics(a, where[layer])])
                if kind == APPLIED and "rollout" not in plan.missing:   # attention_rollout's map
                    maps.append(query_map(rollout([a[:, 0] for a in stack]), net, plan.layout).cpu())
            del cache
    probabilities = torch.cat(probs).numpy()
    classes = [str(c) for c in m.spec.classes] or [str(i) for i in range(probabilities.shape[1])]
    if len(classes) != probabilities.shape[1]:
        classes = [str(i) for i in range(probabilities.shape[1])]
    out_rows = {k: [Rows(*(np.concatenate([part[i] for part in parts]) for i in range(3))) for parts in rows[k]]
                for k in kinds}
    metrics = {k: _metrics(mets[k]) for k in kinds}
    cam = None
    if plan.cam_layer is not None:
        try:
            cam = compute_cam(net, x, "gradcam", probabilities.argmax(1).tolist(), layer=plan.cam_layer,
                              batch_size=batch_size)
        except AttnlabError as e:
            raise AttnlabError(f"{m.label}: {e}") from (e.__cause__ or e)
    return ModelView(plan=plan, classes=classes, probabilities=probabilities, rows=out_rows, metrics=metrics,
                     rollout=torch.cat(maps).double().numpy() if maps else None, gradcam=cam)


def _metrics(per_layer: List[List]) -> Metrics:
    """Per-query metrics of each layer (batches joined), and their per-image means."""
    mad = [torch.cat([p[0] for p in parts]) for parts in per_layer]
    ent = [torch.cat([p[1] for p in parts]) for parts in per_layer]
    return Metrics(query_mad=[t.float().numpy() for t in mad], query_entropy=[t.float().numpy() for t in ent],
                   image_mad=[_nanmean(t) for t in mad], image_entropy=[t.mean(-1).float().numpy() for t in ent])


def _nanmean(t: torch.Tensor) -> np.ndarray:
    """Mean over the queries with a position (NaN for a layer with none: class attention)."""
    ok = ~torch.isnan(t)
    return (torch.nan_to_num(t).sum(-1) / ok.sum(-1)).float().numpy()
