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
from typing import Dict, Optional, Tuple

import torch

from ..geometry import LayerGeometry
from .kernels import query_products


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


def _flags(geometry: LayerGeometry) -> Tuple[bool, bool, bool]:
    """``(some query has a position, every query has one, every key has one)``, read once per geometry
    from its host tensors: asking the device copies would wait for the GPU on every batch."""
    cache = geometry.__dict__.setdefault("_terms", {})  # not a field: equality and hashing ignore it
    if "flags" not in cache:
        _, keys, queries = geometry.distance_terms()
        cache["flags"] = (bool(queries.any()), bool(queries.all()), bool(keys.all()))
    return cache["flags"]


def key_sums(attn: torch.Tensor, geometry: LayerGeometry, radii=()) -> torch.Tensor:  # noqa: ANN001
    """``[B, W, H, Nq, 2 + R]`` float64 sums over each query's keys with a position: the mass
    ``sum_j A_ij``, the distance ``sum_j A_ij d_ij`` (px) and, per radius r (in the layer's
    token units), ``sum_j A_ij [d_ij > r]``, of maps ``[B * windows, heads, Nq, Nk]``.

    One batched product (:func:`~.kernels.query_products`, as the grid layers' ``pair_sums``)
    against a table of each query's ``2 + R`` key weights made once per geometry (the terms
    depend on positions only), instead of a pass over the maps per quantity."""
    nw = geometry.windows
    b, heads, nq, nk = attn.shape[0] // nw, *attn.shape[1:]
    cache = geometry.__dict__.setdefault("_terms", {})  # not a field: equality and hashing ignore it
    key = ("sums", tuple(float(r) for r in radii), str(attn.device))
    if key not in cache:
        d, keys, _ = geometry.distance_terms(attn.device)
        present = keys[:, None, :, None].double().expand(*d.shape, 1)             # [W, Nq, Nk, 1]
        r = torch.as_tensor([float(v) for v in radii], dtype=torch.float64, device=attn.device)
        beyond = (d[..., None] > r * geometry.unit_px).double() * present        # [W, Nq, Nk, R]
        table = torch.cat([present, d[..., None] * present, beyond], -1).reshape(nw * nq, nk, -1)
        cache[key] = table.transpose(1, 2).contiguous()                            # [W * Nq, 2 + R, Nk]
    a = attn.double().reshape(b, nw, heads, nq, nk).permute(1, 3, 0, 2, 4).reshape(nw * nq, b * heads, nk)
    out = query_products(a, cache[key])                                            # [W * Nq, 2 + R, B * H]
    return out.reshape(nw, nq, -1, b, heads).permute(3, 0, 4, 1, 2)


def per_image(attn: torch.Tensor, geometry: LayerGeometry, scores: Optional[torch.Tensor] = None,
              distance: bool = True, entropy: bool = True, sums: Optional[torch.Tensor] = None,
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mad_px, entropy, entropy_norm)`` per image and head, ``[B, heads]`` each, of maps
    ``[B * windows, heads, Nq, Nk]`` laid out as ``geometry`` says (see :func:`mean_distance`);
    ``distance`` / ``entropy`` False skip that part (NaN in its place); ``sums`` reuses
    :func:`key_sums` of the same maps."""
    nw = geometry.windows
    b = attn.shape[0] // nw
    heads = attn.shape[1]
    nan = torch.full((b, heads), math.nan, dtype=torch.float64, device=attn.device)
    mad = _distance(attn, geometry, b, heads, sums) if distance else nan
    if not entropy:
        return mad, nan, nan
    aw = attn.double().reshape(b, nw, heads, *attn.shape[2:])
    h = -torch.special.xlogy(aw, aw).sum(-1)                                   # [B, W, H, Nq]
    if scores is not None:
        reach = reachable_keys(scores, attn).double().reshape(b, nw, heads, -1)
    elif geometry.reach is not None:                                           # the mask's open keys
        reach = geometry.reach.double().to(attn.device)[None, :, None, :].expand_as(h)
    else:                                                                      # every key the softmax spans
        reach = torch.full_like(h, aw.shape[-1])
    norm = torch.where(reach > 1, h / torch.log(reach.clamp_min(2)), torch.zeros_like(h))
    return mad, h.mean(dim=(1, 3)), norm.mean(dim=(1, 3))


def _over_queries(v: torch.Tensor, queries: torch.Tensor, every: bool) -> torch.Tensor:
    """``[B, W, H, Nq, ...] -> [B, H, ...]``: the mean over windows and the queries with a position
    (``every``: all of them have one)."""
    if every:
        return v.mean(dim=(1, 3))
    q = queries.double().reshape(1, *queries.shape[:1], 1, queries.shape[1], *([1] * (v.dim() - 4)))
    return (v * q).sum(dim=(1, 3)) / q.sum(dim=(1, 3))


def _distance(attn: torch.Tensor, geometry: LayerGeometry, b: int, heads: int,
              sums: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean attention distance ``[B, heads]`` (px) of maps ``[B * W, H, Nq, Nk]``."""
    _, _, queries = geometry.distance_terms(attn.device)
    some_query, every_query, every_key = _flags(geometry)
    if not some_query:                                                         # class attention: no distance
        return torch.full((b, heads), math.nan, dtype=torch.float64, device=attn.device)
    sums = key_sums(attn, geometry) if sums is None else sums
    dist = sums[..., 1]                                                        # sum_j A_ij d_ij  [B, W, H, Nq]
    if not every_key:                                                          # renormalise over keys with a position
        dist = dist / sums[..., 0].clamp_min(1e-300)
    return _over_queries(dist, queries, every_query)


def per_image_extra(attn: torch.Tensor, geometry: LayerGeometry, radii,  # noqa: ANN001
                    sums: Optional[torch.Tensor] = None) -> dict:
    """``nonlocality`` (ConViT: sum_j A_ij d_ij over keys with a position, not renormalised, in
    the layer's token units), ``globality`` (``[B, heads, radii]``: the share of the attention
    over keys with a position that lies beyond radius r tokens) and ``prefix_mass`` (attention on
    the prefix keys), each averaged over the queries with a position; ``[B, heads]`` each, empty
    dict for a layer whose queries have no position (CaiT's class attention). ``sums`` reuses
    :func:`key_sums` of the same maps with the same radii."""
    nw = geometry.windows
    b, heads = attn.shape[0] // nw, attn.shape[1]
    _, _, queries = geometry.distance_terms(attn.device)
    some_query, every_query, _ = _flags(geometry)
    if not some_query:
        return {}
    sums = key_sums(attn, geometry, radii) if sums is None else sums            # [B, W, H, Nq, 2 + R]
    mass = sums[..., 0].clamp_min(1e-300)
    out = {"nonlocality": _over_queries(sums[..., 1] / geometry.unit_px, queries, every_query),
           "globality": _over_queries(sums[..., 2:] / mass[..., None], queries, every_query)}  # beyond r
    if geometry.prefix:
        aw = attn.reshape(b, nw, heads, *attn.shape[2:])
        out["prefix_mass"] = _over_queries(aw[..., :geometry.prefix].double().sum(-1), queries, every_query)
    else:
        out["prefix_mass"] = torch.zeros(b, heads, dtype=torch.float64, device=attn.device)
    return out


class GeometricStats:
    """Streaming mean and standard deviation over images of :func:`per_image`'s metrics, per layer and head.

    Per (layer, metric) it keeps the image count and float64 sums and sums of squares
    ``[heads + 1, radii]`` (the last row: the per-image mean over heads), on the device of the
    maps. Rows come out in the tidy schema's columns (``attnlab.tables``): per head, and the mean
    over heads (``head = -1``); a metric undefined for a layer (distance under class
    attention) gives no row rather than a zero.
    """

    METRICS = ("mad_px", "entropy", "entropy_norm")
    EXTRA = ("nonlocality", "globality", "prefix_mass")
    #: How partial accumulators combine (``attnlab.studies.sharding``): counts and sums add up.
    PARTIALS = "sums"

    def __init__(self, metrics: Optional[set] = None, radii=(0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)) -> None:  # noqa: ANN001
        self.metrics = [m for m in self.METRICS + self.EXTRA if metrics is None or m in metrics]
        self.radii = [float(r) for r in radii]
        self._sums: Dict[Tuple[int, str], list] = {}  # (layer, metric) -> [n, sums [H + 1, R], squares [H + 1, R]]

    def update(self, layer: int, attn: torch.Tensor, geometry: LayerGeometry,
               scores: Optional[torch.Tensor] = None) -> None:
        want = set(self.metrics)
        extra = bool(set(self.EXTRA) & want)
        has_queries = _flags(geometry)[0]
        sums = key_sums(attn, geometry, self.radii if extra else ()) \
            if has_queries and (extra or "mad_px" in want) else None                # one pass for every distance metric
        values = dict(zip(self.METRICS, per_image(attn, geometry, scores, distance="mad_px" in want,
                                                  entropy=bool(want & {"entropy", "entropy_norm"}), sums=sums)))
        if extra:
            values.update(per_image_extra(attn, geometry, self.radii, sums=sums))
        for metric in self.metrics:
            if metric not in values:  # undefined for this layer (no query has a position)
                continue
            v = values[metric].double()                                         # [B, heads] (globality: [B, H, R])
            v = v if metric == "globality" else v[..., None]                    # [B, H, R]
            v = torch.cat([v, v.mean(dim=1, keepdim=True)], dim=1)              # heads, then the mean over heads (-1)
            s = self._sums.get((layer, metric))
            if s is None:
                self._sums[(layer, metric)] = [v.shape[0], v.sum(0), (v * v).sum(0)]
            else:                                                               # on the device: no host sync
                s[0] += v.shape[0]
                s[1] += v.sum(0)
                s[2] += (v * v).sum(0)

    def partials(self) -> Dict[Tuple[int, str], Tuple[int, torch.Tensor, torch.Tensor]]:
        """``(layer, metric) -> (n, sums, squares)``, ``[heads + 1, radii]`` each: what combining the
        statistics of several processes needs (they add up)."""
        return {key: (n, total, squares) for key, (n, total, squares) in self._sums.items()}

    def set_partials(self, partials: Dict[Tuple[int, str], Tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """Replace every accumulator by ``partials`` (as :meth:`partials` gives them): combined totals."""
        self._sums = {key: [int(n), total.double(), squares.double()] for key, (n, total, squares) in partials.items()}

    def rows(self, model: str, checkpoint: str, attention: str = "applied") -> list:
        cells = {}
        for (layer, metric), (n, total, squares) in self._sums.items():
            total, squares = total.cpu().tolist(), squares.cpu().tolist()       # [H + 1][R]: once, at the end
            radii = self.radii if metric == "globality" else [math.nan]
            heads = list(range(len(total) - 1)) + [-1]
            for h, head in enumerate(heads):
                for k, radius in enumerate(radii):
                    cells[(layer, head, metric, radius)] = (n, total[h][k], squares[h][k])
        out = []
        for (layer, head, metric, radius), (n, total, squares) in sorted(
                cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], -1 if math.isnan(kv[0][3])
                                               else kv[0][3])):
            if n == 0 or not math.isfinite(total):
                continue
            mean = total / n
            var = max(squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else math.nan
            out.append(dict(model=model, checkpoint=checkpoint, attention=attention, layer=layer, head=head,
                            metric=metric, radius=radius, value=mean, std=math.sqrt(var) if n > 1 else math.nan,
                            n_images=n))
        return out
