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
