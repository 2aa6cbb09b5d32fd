"""Attention metrics on windowed, pooled and class-token attention, from a layer's geometry.

The same quantities as :mod:`attnlab.metrics.attention` defines for one patch grid, for maps
whose queries and keys sit where a :class:`~attnlab.geometry.LayerGeometry` says: mean
attention distance in pixels (keys without a position, such as prefix tokens and padding,
left out and the row renormalised over the rest, as for the grid case), and entropy
normalised by the log of the number of keys each query can reach (Swin's masked keys count
as absent). Tensors in, tensors out; no model code.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..geometry import LayerGeometry


def mean_distance(attn: torch.Tensor, geometry: LayerGeometry) -> torch.Tensor:
    """Mean attention distance per head in pixels, ``[heads]``: for queries with a position,
    ``sum_j A_ij d_ij`` over keys with a position, renormalised over those keys, averaged over
    queries, windows and images. NaN for a layer whose queries have no position (class attention)."""
    a = attn.double()
    nw = geometry.windows
    d = geometry.distances()                                                   # [W, Nq, Nk]
    b = a.shape[0] // nw
    a = a.reshape(b, nw, *a.shape[1:])                                         # [B, W, H, Nq, Nk]
    keys = ~torch.isnan(geometry.key_pos).any(-1)                              # [W, Nk]
    queries = ~torch.isnan(geometry.query_pos).any(-1)                         # [W, Nq]
    if not queries.any():
        return torch.full((a.shape[2],), math.nan, dtype=torch.float64)
    mass = (a * keys[None, :, None, None, :]).sum(-1)                          # mass on keys with a position
    weighted = (a * torch.nan_to_num(d)[None, :, None]).sum(-1) / mass.clamp_min(1e-300)
    sel = queries[None, :, None, :].expand_as(weighted)
    return (weighted * sel).sum(dim=(0, 1, 3)) / sel.sum(dim=(0, 1, 3))


def reachable_keys(scores: Optional[torch.Tensor], attn: torch.Tensor, masked_below: float = -50.0) -> torch.Tensor:
    """``[..., Nq]`` number of keys each query can reach: those the mask leaves open (timm masks
    with -100 added to the logits) when the scores are known, else those with non-zero attention."""
    if scores is not None:
        return (scores > masked_below).sum(-1)
    return (attn > 0).sum(-1)


def entropy(attn: torch.Tensor, reachable: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(entropy, entropy / log K)`` per head, ``[heads]`` each: mean over queries and maps of
    ``-sum_j A_ij log A_ij`` (nats), K the number of keys a query can reach (all keys by default)."""
    a = attn.double()
    h = -torch.special.xlogy(a, a).sum(-1)                                     # [maps, heads, Nq]
    k = torch.full_like(h, a.shape[-1]) if reachable is None else reachable.double()
    norm = torch.where(k > 1, h / torch.log(k.clamp_min(2)), torch.zeros_like(h))
    return h.mean(dim=(0, 2)), norm.mean(dim=(0, 2))


def uniform_in_windows(geometry: LayerGeometry) -> float:
    """The mean distance (px) uniform attention over each window's present keys would have."""
    d = geometry.distances()
    keys = geometry.key_present()
    q_ok = ~torch.isnan(geometry.query_pos).any(-1)
    per_query = (torch.nan_to_num(d) * keys[:, None, :]).sum(-1) / keys.sum(-1, keepdim=True).clamp_min(1)
    return float(per_query[q_ok].mean())


def per_image(attn: torch.Tensor, geometry: LayerGeometry, scores: Optional[torch.Tensor] = None,
              distance: bool = True, entropy: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mad_px, entropy, entropy_norm)`` per image and head, ``[B, heads]`` each, of maps
    ``[B * windows, heads, Nq, Nk]`` laid out as ``geometry`` says (see :func:`mean_distance`);
    ``distance`` / ``entropy`` False skip that part (NaN in its place)."""
    a = attn.double()
    nw = geometry.windows
    b = a.shape[0] // nw
    heads = a.shape[1]
    nan = torch.full((b, heads), math.nan, dtype=torch.float64)
    aw = a.reshape(b, nw, heads, *a.shape[2:])
    mad = _distance(aw, geometry, b, heads) if distance else nan
    if not entropy:
        return mad, nan, nan
    h = -torch.special.xlogy(aw, aw).sum(-1)                                   # [B, W, H, Nq]
    if scores is not None:
        reach = reachable_keys(scores, attn).double().reshape(b, nw, heads, -1)
    elif geometry.reach is not None:                                           # the mask's open keys
        reach = geometry.reach.double().to(a.device)[None, :, None, :].expand_as(h)
    else:                                                                      # every key the softmax spans
        reach = torch.full_like(h, aw.shape[-1])
    norm = torch.where(reach > 1, h / torch.log(reach.clamp_min(2)), torch.zeros_like(h))
    return mad, h.mean(dim=(1, 3)), norm.mean(dim=(1, 3))


def _distance(aw: torch.Tensor, geometry: LayerGeometry, b: int, heads: int) -> torch.Tensor:
    """Mean attention distance ``[B, heads]`` (px) of maps ``[B, W, H, Nq, Nk]``."""
    d, keys, queries = geometry.distance_terms(aw.device)                      # [W, Nq, Nk], [W, Nk], [W, Nq]
    dist = (aw * d[None, :, None]).sum(-1)                                     # sum_j A_ij d_ij  [B, W, H, Nq]
    if not bool(keys.all()):                                                   # renormalise over keys with a position
        dist = dist / (aw * keys[None, :, None, None, :]).sum(-1).clamp_min(1e-300)
    if not bool(queries.any()):                                                # class attention: no distance
        return torch.full((b, heads), math.nan, dtype=torch.float64)
    if bool(queries.all()):
        return dist.mean(dim=(1, 3))
    q = queries[None, :, None, :].double()                                     # mean over queries with a position
    return (dist * q).sum(dim=(1, 3)) / q.sum(dim=(1, 3))


def per_image_extra(attn: torch.Tensor, geometry: LayerGeometry, radii) -> dict:  # noqa: ANN001
    """``nonlocality`` (ConViT: sum_j A_ij d_ij over keys with a position, not renormalised, in
    the layer's token units), ``globality`` (``[B, heads, radii]``: the share of the attention
    over keys with a position that lies beyond radius r tokens) and ``prefix_mass`` (attention on
    the prefix keys), each averaged over the queries with a position; ``[B, heads]`` each, empty
    dict for a layer whose queries have no position (CaiT's class attention)."""
    a = attn.double()
    nw = geometry.windows
    b, heads = a.shape[0] // nw, a.shape[1]
    d, keys, queries = geometry.distance_terms(a.device)
    if not bool(queries.any()):
        return {}
    aw = a.reshape(b, nw, heads, *a.shape[2:])                                 # [B, W, H, Nq, Nk]
    q = queries[None, :, None, :].double()

    def over_queries(v: torch.Tensor) -> torch.Tensor:                         # [B, W, H, Nq] -> [B, H]
        return (v * q).sum(dim=(1, 3)) / q.sum(dim=(1, 3))

    out = {"nonlocality": over_queries((aw * d[None, :, None]).sum(-1) / geometry.unit_px)}
    every_key = bool(keys.all())  # no padding: each row's mass over keys with a position is the whole row
    mass = aw.sum(-1).clamp_min(1e-300) if every_key else (aw * keys[None, :, None, None, :]).sum(-1).clamp_min(1e-300)
    cache = geometry.__dict__.setdefault("_terms", {})  # the indicator [d_ij > r] is the same for every batch
    key = ("beyond", tuple(float(r) for r in radii), str(a.device))
    if key not in cache:
        r = torch.as_tensor(list(radii), dtype=torch.float64, device=a.device)
        cache[key] = (d[..., None] > r * geometry.unit_px).to(attn.dtype)      # [W, Nq, Nk, R]
    # a sum of at most Nk products of numbers in [0, 1]: done in the map's precision, divided in float64
    present = attn.reshape(aw.shape) if every_key else attn.reshape(aw.shape) * keys[None, :, None, None, :].to(attn.dtype)
    beyond = torch.einsum("bwhqk,wqkr->bwhqr", present, cache[key]).double()
    share = beyond / mass[..., None]                                           # beyond r, over present keys
    out["globality"] = (share * q[..., None]).sum(dim=(1, 3)) / q.sum(dim=(1, 3))[..., None]
    out["prefix_mass"] = over_queries(aw[..., :geometry.prefix].sum(-1)) if geometry.prefix \
        else torch.zeros(b, heads, dtype=torch.float64, device=a.device)
    return out


class GeometricStats:
    """Streaming mean and standard deviation over images of :func:`per_image`'s metrics, per layer and head.

    Rows come out in the tidy schema's columns (``attnlab.tables``): per head, and the mean
    over heads (``head = -1``); a metric undefined for a layer (distance under class
    attention) gives no row rather than a zero.
    """

    METRICS = ("mad_px", "entropy", "entropy_norm")
    EXTRA = ("nonlocality", "globality", "prefix_mass")

    def __init__(self, metrics: Optional[set] = None, radii=(0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)) -> None:  # noqa: ANN001
        self.metrics = [m for m in self.METRICS + self.EXTRA if metrics is None or m in metrics]
        self.radii = [float(r) for r in radii]
        self._sums: dict = {}

    def update(self, layer: int, attn: torch.Tensor, geometry: LayerGeometry,
               scores: Optional[torch.Tensor] = None) -> None:
        want = set(self.metrics)
        values = dict(zip(self.METRICS, per_image(attn, geometry, scores, distance="mad_px" in want,
                                                  entropy=bool(want & {"entropy", "entropy_norm"}))))
        if set(self.EXTRA) & set(self.metrics):
            values.update(per_image_extra(attn, geometry, self.radii))
        for metric in self.metrics:
            if metric not in values:  # undefined for this layer (no query has a position)
                continue
            v = values[metric].cpu()                                            # [B, heads] (globality: [B, H, R])
            v = v if metric == "globality" else v[..., None]                    # [B, H, R]
            v = torch.cat([v, v.mean(dim=1, keepdim=True)], dim=1)              # heads, then the mean over heads (-1)
            n = v.shape[0]
            sums, squares = v.sum(0).tolist(), (v * v).sum(0).tolist()          # [H + 1][R], one pass
            radii = self.radii if metric == "globality" else [math.nan]
            heads = list(range(v.shape[1] - 1)) + [-1]
            for h, head in enumerate(heads):
                for k, radius in enumerate(radii):
                    s = self._sums.setdefault((layer, head, metric, radius), [0, 0.0, 0.0])
                    s[0] += n
                    s[1] += sums[h][k]
                    s[2] += squares[h][k]

    def rows(self, model: str, checkpoint: str, attention: str = "applied") -> list:
        out = []
        for (layer, head, metric, radius), (n, total, squares) in sorted(
                self._sums.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], -1 if math.isnan(kv[0][3])
                                                    else kv[0][3])):
            if n == 0 or not math.isfinite(total):
                continue
            mean = total / n
            var = max(squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else math.nan
            out.append(dict(model=model, checkpoint=checkpoint, attention=attention, layer=layer, head=head,
                            metric=metric, radius=radius, value=mean, std=math.sqrt(var) if n > 1 else math.nan,
                            n_images=n))
        return out
