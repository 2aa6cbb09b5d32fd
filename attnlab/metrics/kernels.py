"""The computational kernels behind every attention metric, on validated maps.

:mod:`.attention` (one call per map) and :mod:`.streaming` (many batches, several
metrics sharing one pass over a map) compute the same numbers with these functions, so
both give the same bits. Nothing here checks its input: callers pass a map ``a`` of
shape ``[B, H, N, N]`` that :func:`~.validation.validate_attention` has already checked
and converted (float64, or float32 in the accumulator), plus its
:class:`~attnlab.layout.TokenLayout`. The ``*_core`` functions return the per-image
values ``[B, H]`` (``[B, H, R]`` for globality); the rest are the shared parts.

Notation as in :mod:`.attention`: ``P`` prefix tokens, ``G`` patch tokens, ``d_ij`` the
grid distance between patches ``i`` and ``j``, ``A~`` the patch block renormalised over
patch keys.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..layout import TokenLayout
from ..scratch import ScratchBuffer
from .validation import MetricInputError

__all__ = [
    "ScratchBuffer",
    "distance_rings",
    "entropy_core",
    "globality_core",
    "globality_from_rings",
    "mad_core",
    "nonlocality_core",
    "patch_block",
    "pair_sums",
    "patch_distances",
    "prefix_mass_core",
    "query_products",
    "renorm_rows",
    "ring_mass",
    "row_entropy",
    "weighted_distance",
]


# --------------------------------------------------------------------------- geometry


@lru_cache(maxsize=64)
def _distances_cpu(layout: TokenLayout, pixels: bool) -> Tensor:
    # Computed from integer offsets (not cdist, which may take a matmul shortcut) so that
    # d_ii is exactly 0 and integer distances are exact: globality thresholds d_ij > r
    # at integer r depend on it.
    coords = layout.patch_coords()
    diff = coords[:, None, :] - coords[None, :, :]
    if pixels:
        diff = diff * torch.tensor(layout.patch_size, dtype=torch.float64)
    return diff.pow(2).sum(-1).sqrt()  # d_ij = sqrt(dy^2 + dx^2)


def patch_distances(
    layout: TokenLayout, device: torch.device, pixels: bool = False, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``[G, G]`` distances between patch positions (patch units or pixels), cached per layout."""
    return _distances_cpu(layout, pixels).to(device=device, dtype=dtype)


@lru_cache(maxsize=64)
def distance_rings(layout: TokenLayout, radii: Tuple[float, ...]) -> Tuple[Tensor, Tensor, int]:
    """Ring of every (query, key) patch pair for a globality curve (CPU, cached).

    With ``u`` the sorted distinct radii, ``ring_ij`` counts the radii below ``d_ij``, so
    ``d_ij > u_m`` exactly when ``ring_ij > m``. Also returns where each requested radius
    sits in ``u`` and the number of rings ``len(u) + 1``.
    """
    distinct, where = torch.unique(torch.tensor(radii, dtype=torch.float64), sorted=True, return_inverse=True)
    ring = (_distances_cpu(layout, pixels=False)[..., None] > distinct).sum(-1)  # float64 compare: exact
    return ring, where, distinct.numel() + 1


# --------------------------------------------------------------------------- shared parts


def row_entropy(a: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``H_i = -sum_j A_ij log A_ij`` per row (``[..., N] -> [...]``), with ``0 log 0 = 0``.

    One log and one multiply (faster than ``xlogy``/``entr`` on CPU): clamping at the
    dtype's smallest normal number keeps the log finite at zeros, where ``0 * log(tiny)``
    is exactly 0, and moves only subnormal entries, by under 1e-36 nats in float32.
    ``out``, a scratch tensor shaped like ``a``, saves allocating one.
    """
    logs = torch.clamp_min(a, torch.finfo(a.dtype).tiny, out=out).log_()
    return -logs.mul_(a).sum(-1)


def patch_block(a: Tensor, layout: TokenLayout) -> Tuple[Tensor, Tensor]:
    """Patch-to-patch block ``[B, H, G, G]`` and its row sums over patch keys ``[B, H, G]``."""
    p = layout.num_prefix_tokens
    block = a[..., p:, p:]
    return block, block.sum(-1)


def renorm_rows(weighted: Tensor, mass: Tensor) -> Tensor:
    """Per-query sums of ``A`` turned into sums of ``A~``: ``weighted / mass`` (0 where mass is 0)."""
    # sum_j A~_ij x_ij = (sum_j A_ij x_ij) / sum_j A_ij. A query that puts no mass at all on
    # patch keys (only in hand-built maps or float underflow) contributes 0 rather than NaN.
    return torch.where(mass > 0, weighted / mass.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(weighted))


def weighted_distance(block: Tensor, dist: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``sum_j A_ij d_ij`` per query: ``[B, H, G]``; ``out`` is an optional scratch shaped like ``block``."""
    return torch.mul(block, dist, out=out).sum(-1)  # elementwise: faster on CPU than einsum's batched matmul


def ring_mass(block: Tensor, ring: Tensor, n_rings: int, scatter: Optional[bool] = None) -> Tensor:
    """``sum_j A_ij [ring_ij = k]``: ``[B, H, G, G] -> [B, H, G, n_rings]`` in one pass.

    A scatter-add on CPU; a one-hot contraction elsewhere (GPU scatter-adds use atomics,
    whose summation order, and so the last bits, change from run to run). ``scatter``
    forces one or the other.
    """
    if block.device.type == "cpu" if scatter is None else scatter:
        out = block.new_zeros(*block.shape[:-1], n_rings)
        return out.scatter_add_(-1, ring.expand(block.shape), block)
    onehot = torch.nn.functional.one_hot(ring, n_rings).to(block.dtype)
    return torch.einsum("bhij,ijk->bhik", block, onehot)


# --------------------------------------------------------------------------- per-image values


def entropy_core(a: Tensor, query: str, num_prefix: Optional[int], normalized: bool) -> Tensor:
    """``mean_{i in Q} H_i`` per image and head ``[B, H]``, ``Q`` chosen by ``query``; ``/ log N`` if normalized."""
    n = a.shape[-1]
    if query not in ("all", "patch", "prefix"):
        raise MetricInputError(f"query must be 'all', 'patch' or 'prefix', got {query!r}")
    if query != "all":
        if num_prefix is None:
            raise MetricInputError(f"query={query!r} needs layout= or num_prefix_tokens=")
        if query == "prefix":
            if num_prefix == 0:
                raise MetricInputError("query='prefix' but there are no prefix tokens")
            a = a[..., :num_prefix, :]
        else:
            if num_prefix == n:
                raise MetricInputError("query='patch' but there are no patch tokens")
            a = a[..., num_prefix:, :]
    h = row_entropy(a).mean(-1)  # [B, H]
    if normalized:
        if n < 2:
            raise MetricInputError("normalised entropy needs N >= 2 tokens (log N = 0)")
        h = h / math.log(n)
    return h


def mad_core(a: Tensor, layout: TokenLayout, renormalize: bool) -> Tensor:
    """Mean attention distance in pixels ``[B, H]``: ``(1/G) sum_i sum_j A~_ij d_ij`` (``A`` if not renormalize)."""
    block, mass = patch_block(a, layout)
    wd = weighted_distance(block, patch_distances(layout, a.device, pixels=True, dtype=a.dtype))
    if renormalize:
        wd = renorm_rows(wd, mass)
    return wd.mean(-1)


def nonlocality_core(a: Tensor, layout: TokenLayout) -> Tensor:
    """ConViT non-locality ``[B, H]``: ``(1/G) sum_{i,j in patches} d_ij A_ij``, patch units."""
    p = layout.num_prefix_tokens
    block = a[..., p:, p:]
    return weighted_distance(block, patch_distances(layout, a.device, dtype=a.dtype)).mean(-1)


def globality_core(a: Tensor, layout: TokenLayout, radii: Tensor) -> Tensor:
    """Globality curve ``[B, H, R]``: ``(1/G) sum_i sum_j A~_ij [d_ij > r_k]`` for each radius ``r_k``."""
    ring, where, n_rings = distance_rings(layout, tuple(radii.tolist()))
    p = layout.num_prefix_tokens
    return globality_from_rings(ring_mass(a[..., p:, p:], ring.to(a.device), n_rings), where)


def globality_from_rings(by_ring: Tensor, where: Tensor) -> Tensor:
    """The globality curve ``[B, H, R]`` from each query's mass per ring ``[B, H, G, U + 1]``
    (:func:`ring_mass`; overwritten) and where each radius sits among the rings (:func:`distance_rings`)."""
    # Renormalise each query's patch mass in place (a query with none keeps zeros), average
    # over queries, then sum the rings beyond each radius: beyond u_m = rings k > m, one
    # small product with a strictly-lower mask (the mean commutes with it).
    n_rings = by_ring.shape[-1]
    mass = by_ring.sum(-1, keepdim=True).clamp_min_(torch.finfo(by_ring.dtype).tiny)
    share = by_ring.div_(mass).mean(-2)                                # [B, H, U + 1]
    outer = torch.ones(n_rings, n_rings - 1, dtype=by_ring.dtype, device=by_ring.device).tril(-1)
    return (share @ outer)[..., where.to(by_ring.device)]              # [B, H, R], requested order


@lru_cache(maxsize=64)
def _pair_table(layout: TokenLayout, radii: Tuple[float, ...], dtype: torch.dtype, device: str) -> Tensor:
    """``[G_q, 1 + U + 1, G_k]``: each query's key distances (pixels), then its keys' ring one-hot."""
    ring, _, n_rings = distance_rings(layout, radii)
    onehot = torch.nn.functional.one_hot(ring, n_rings).to(torch.float64)      # [G, G, U + 1]
    table = torch.cat([_distances_cpu(layout, pixels=True)[..., None], onehot], -1)
    return table.transpose(1, 2).contiguous().to(device=device, dtype=dtype)


def query_products(rows: Tensor, table: Tensor) -> Tensor:
    """``[Q, C, M]``: for each query ``q``, ``table[q] @ rows[q]^T``, of ``M`` attention rows
    ``[Q, M, K]`` (every image and head's row of that query) against the query's own table
    ``[Q, C, K]`` (C weights per key). The per-geometry distance metrics are all such products:
    the wide side (``M`` = images x heads) last, which BLAS runs several times faster than
    ``rows @ table^T``; ``rows`` may be a strided view of the maps (read in place)."""
    return torch.bmm(table, rows.transpose(1, 2))


def pair_sums(block: Tensor, layout: TokenLayout, radii: Tuple[float, ...]) -> Tensor:
    """``[B, H, G, 1 + U + 1]`` per patch query: ``sum_j A_ij d_ij`` (pixels), then the mass on
    each distance ring ``sum_j A_ij [ring_ij = k]`` (:func:`distance_rings`; the rings add up to
    the patch mass ``sum_j A_ij``), of a patch block ``[B, H, G, G]``, in its dtype.

    One batched product over queries against a table made once per layout, instead of a pass over
    the map per quantity; deterministic on every device (no atomics). BLAS blocks the product by
    the batch's size, so in float32 an image's sums can differ in the last bits (about 1e-7
    relative) with the batch it came in."""
    b, h, g, _ = block.shape
    table = _pair_table(layout, tuple(radii), block.dtype, str(block.device))         # [G_q, C, G_k]
    # Queries first, read where they lie: a block sliced out of a map (or a whole map) has images
    # and heads on one stride, so this is a view and BLAS reads the map in place (no copy).
    x = block.permute(2, 0, 1, 3).reshape(g, b * h, g)                                # [G_q, B * H, G_k]
    sums = query_products(x, table)                                                    # [G_q, C, B * H]
    return sums.view(g, -1, b, h).permute(2, 3, 0, 1).contiguous()                     # small: C numbers a query


def prefix_mass_core(a: Tensor, layout: TokenLayout) -> Tensor:
    """Attention-sink mass ``[B, H]``: ``(1/G) sum_{i in patches} sum_{j in prefix} A_ij``."""
    p = layout.num_prefix_tokens
    return a[..., p:, :p].sum(-1).mean(-1)  # empty prefix -> sums of nothing = 0
