"""Per-head metrics of attention maps (methods.md section 3).

Every function takes a plain attention tensor ``A`` of shape ``[B, heads, N, N]`` whose
rows sum to 1, plus a :class:`~attnlab.layout.TokenLayout` that says which tokens are
prefix tokens (class, distillation, registers) and where each patch token sits. Nothing
here knows about models, so the same numbers come out of timm, ReViT or CB captures.

Each metric comes in two forms: ``metric(...)`` returns one value per head, ``[heads]``
(mean over images and the chosen queries), and ``metric_per_image(...)`` returns
``[B, heads]`` (mean over queries only), which the streaming accumulator needs for a
spread over images. Since every image has the same number of queries, the first is
exactly the batch mean of the second. Results are float64 on the input's device; all
sums are accumulated in float64 whatever the input dtype.

Notation: ``P`` prefix tokens, then ``G = gh * gw`` patch tokens in row-major order,
``N = P + G``; ``d_ij`` is the Euclidean distance between the grid positions of patch
tokens ``i`` and ``j`` (patch units, or pixels with rows scaled by ``ph`` and columns by
``pw``); ``A~`` is the patch-to-patch block ``A[P:, P:]`` renormalised so each row sums
to 1 over patch keys.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import AttnlabError
from ..layout import TokenLayout

__all__ = [
    "MetricInputError",
    "attention_entropy",
    "attention_entropy_per_image",
    "mean_attention_distance",
    "mean_attention_distance_per_image",
    "nonlocality",
    "nonlocality_per_image",
    "globality_curve",
    "globality_curve_per_image",
    "prefix_mass",
    "prefix_mass_per_image",
]

Query = Literal["all", "patch", "prefix"]
IntOrPair = Union[int, Tuple[int, int]]

# How far a row sum may stray from 1 (and an entry below 0) before ``check=True`` refuses
# the map. Loose enough for softmax outputs stored in that dtype, tight enough to catch
# logits, unnormalised scores or head-averaged-and-rescaled maps.
_ROW_TOL = {torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float32: 1e-4, torch.float64: 1e-8}


class MetricInputError(AttnlabError, ValueError):
    """Input a metric cannot measure (wrong shape, layout mismatch, rows not summing to 1).

    A ``ValueError`` for Python callers and an ``AttnlabError`` so the CLI prints one line.
    """


# --------------------------------------------------------------------------- validation


def _shape_str(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _layout_str(layout: TokenLayout) -> str:
    gh, gw = layout.grid_size
    return f"{layout.num_prefix_tokens} prefix + {gh}x{gw} patches = {layout.num_tokens} tokens"


def _validate_attention(
    attn: Tensor, layout: Optional[TokenLayout], check: bool, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Check ``attn`` is ``[B, heads, N, N]`` (matching ``layout``) and return it in ``dtype``."""
    if not isinstance(attn, Tensor):
        raise MetricInputError(f"attention must be a torch.Tensor, got {type(attn).__name__}")
    if attn.dim() != 4:
        raise MetricInputError(f"attention must be [B, heads, N, N], got shape {_shape_str(attn)}")
    if attn.shape[-1] != attn.shape[-2]:
        raise MetricInputError(f"attention must be square over tokens [B, heads, N, N], got shape {_shape_str(attn)}")
    if not attn.is_floating_point():
        raise MetricInputError(f"attention must be a floating-point tensor, got dtype {attn.dtype}")
    if attn.numel() == 0:
        raise MetricInputError(f"attention is empty (shape {_shape_str(attn)})")
    if layout is not None and attn.shape[-1] != layout.num_tokens:
        raise MetricInputError(
            f"attention has N={attn.shape[-1]} tokens but the layout has {_layout_str(layout)}"
        )
    if check:
        # Two passes, not three: NaN propagates through min(), and an inf entry makes its
        # row sum inf or NaN, so the min and the row sums also catch non-finite maps.
        tol = _ROW_TOL.get(attn.dtype, 1e-4)
        low = float(attn.min())
        err = float((attn.sum(dim=-1, dtype=torch.float64) - 1.0).abs().max())
        if not (math.isfinite(low) and math.isfinite(err)):
            raise MetricInputError("attention contains NaN or inf")
        if low < -tol:
            raise MetricInputError(f"attention has a negative entry ({low:.3g}); pass softmax probabilities, not logits")
        if err > tol:
            raise MetricInputError(
                f"attention rows must sum to 1 over keys (worst row is off by {err:.3g} > {tol:g}); "
                "pass softmax probabilities, or check=False"
            )
    return attn.to(dtype)


def _resolve_prefix(n: int, layout: Optional[TokenLayout], num_prefix_tokens: Optional[int]) -> Optional[int]:
    """Number of prefix tokens from a layout or an explicit count (None when neither given)."""
    if layout is not None and num_prefix_tokens is not None and num_prefix_tokens != layout.num_prefix_tokens:
        raise MetricInputError(
            f"num_prefix_tokens={num_prefix_tokens} disagrees with the layout's {layout.num_prefix_tokens}; give one"
        )
    if layout is not None:
        return layout.num_prefix_tokens
    if num_prefix_tokens is None:
        return None
    if not 0 <= num_prefix_tokens <= n:
        raise MetricInputError(f"num_prefix_tokens={num_prefix_tokens} is outside [0, N={n}]")
    return int(num_prefix_tokens)


def _require_layout(layout: object, what: str) -> TokenLayout:
    if not isinstance(layout, TokenLayout):
        raise MetricInputError(f"{what} needs a TokenLayout, got {type(layout).__name__}")
    return layout


def _make_layout(
    layout: Optional[TokenLayout],
    grid_size: Optional[IntOrPair],
    patch_size: Optional[IntOrPair],
    num_prefix_tokens: Optional[int],
) -> TokenLayout:
    """A layout from either ``layout=`` or the (grid_size, patch_size, num_prefix_tokens) ints."""
    if layout is not None:
        if grid_size is not None or patch_size is not None or num_prefix_tokens is not None:
            raise MetricInputError("give either layout= or grid_size/patch_size/num_prefix_tokens, not both")
        return _require_layout(layout, "mean_attention_distance")
    if grid_size is None or patch_size is None:
        raise MetricInputError("mean_attention_distance needs layout= or both grid_size and patch_size")
    try:
        return TokenLayout(num_prefix_tokens=int(num_prefix_tokens or 0), grid_size=grid_size, patch_size=patch_size)
    except (TypeError, ValueError, IndexError) as exc:
        raise MetricInputError(
            f"bad layout (grid_size={grid_size}, patch_size={patch_size}, num_prefix_tokens={num_prefix_tokens}): {exc}"
        ) from None


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
    return diff.pow(2).sum(-1).sqrt()


def _distances(
    layout: TokenLayout, device: torch.device, pixels: bool = False, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``[G, G]`` distances between patch positions (patch units or pixels)."""
    return _distances_cpu(layout, pixels).to(device=device, dtype=dtype)


def _radii_tensor(radii: Union[Sequence[float], Tensor]) -> Tensor:
    r = torch.as_tensor(radii, dtype=torch.float64).detach().cpu()
    if r.dim() == 0:
        r = r.reshape(1)
    if r.dim() != 1 or r.numel() == 0:
        raise MetricInputError(f"radii must be a non-empty 1-D sequence, got shape {list(r.shape)}")
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise MetricInputError(f"radii must be finite and >= 0, got {r.tolist()}")
    return r


# --------------------------------------------------------------------------- cores (float64, validated)
# These take a validated float64 [B, H, N, N] map; the streaming accumulator calls them
# directly so a batch is validated and converted once.


def _entropy_core(a: Tensor, query: str, num_prefix: Optional[int], normalized: bool) -> Tensor:
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
    h = _row_entropy(a).mean(-1)  # [B, H]
    if normalized:
        if n < 2:
            raise MetricInputError("normalised entropy needs N >= 2 tokens (log N = 0)")
        h = h / math.log(n)
    return h


def _patch_block(a: Tensor, layout: TokenLayout) -> Tuple[Tensor, Tensor]:
    """Patch-to-patch block ``[B, H, G, G]`` and its row sums over patch keys ``[B, H, G]``."""
    p = layout.num_prefix_tokens
    block = a[..., p:, p:]
    return block, block.sum(-1)


def _renorm_rows(weighted: Tensor, mass: Tensor) -> Tensor:
    # sum_j A~_ij x_ij = (sum_j A_ij x_ij) / sum_j A_ij. A query that puts no mass at all on
    # patch keys (only in hand-built maps or float underflow) contributes 0 rather than NaN.
    return torch.where(mass > 0, weighted / mass.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(weighted))


def _weighted_distance(block: Tensor, dist: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``sum_j A_ij d_ij`` per query: ``[B, H, G]``; ``out`` is an optional scratch shaped like ``block``."""
    return torch.mul(block, dist, out=out).sum(-1)  # elementwise: faster on CPU than einsum's batched matmul


def _mad_core(a: Tensor, layout: TokenLayout, renormalize: bool) -> Tensor:
    block, mass = _patch_block(a, layout)
    wd = _weighted_distance(block, _distances(layout, a.device, pixels=True, dtype=a.dtype))
    if renormalize:
        wd = _renorm_rows(wd, mass)
    return wd.mean(-1)


def _nonlocality_core(a: Tensor, layout: TokenLayout) -> Tensor:
    p = layout.num_prefix_tokens
    block = a[..., p:, p:]
    return _weighted_distance(block, _distances(layout, a.device, dtype=a.dtype)).mean(-1)


def _row_entropy(a: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``H_i = -sum_j A_ij log A_ij`` per row (``[..., N] -> [...]``), with ``0 log 0 = 0``.

    One log and one multiply (faster than ``xlogy``/``entr`` on CPU): clamping at the
    dtype's smallest normal number keeps the log finite at zeros, where ``0 * log(tiny)``
    is exactly 0, and moves only subnormal entries, by under 1e-36 nats in float32.
    ``out``, a scratch tensor shaped like ``a``, saves allocating one.
    """
    logs = torch.clamp_min(a, torch.finfo(a.dtype).tiny, out=out).log_()
    return -logs.mul_(a).sum(-1)


@lru_cache(maxsize=64)
def _rings_cpu(layout: TokenLayout, radii: Tuple[float, ...]) -> Tuple[Tensor, Tensor, int]:
    """Ring of every (query, key) patch pair for a globality curve.

    With ``u`` the sorted distinct radii, ``ring_ij`` counts the radii below ``d_ij``, so
    ``d_ij > u_m`` exactly when ``ring_ij > m``. Also returns where each requested radius
    sits in ``u`` and the number of rings ``len(u) + 1``.
    """
    distinct, where = torch.unique(torch.tensor(radii, dtype=torch.float64), sorted=True, return_inverse=True)
    ring = (_distances_cpu(layout, pixels=False)[..., None] > distinct).sum(-1)  # float64 compare: exact
    return ring, where, distinct.numel() + 1


def _ring_mass(block: Tensor, ring: Tensor, n_rings: int, scatter: Optional[bool] = None) -> Tensor:
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


def _globality_core(a: Tensor, layout: TokenLayout, radii: Tensor) -> Tensor:
    ring, where, n_rings = _rings_cpu(layout, tuple(radii.tolist()))
    p = layout.num_prefix_tokens
    by_ring = _ring_mass(a[..., p:, p:], ring.to(a.device), n_rings)  # [B, H, G, U + 1]
    # Renormalise each query's patch mass in place (a query with none keeps zeros), average
    # over queries, then sum the rings beyond each radius: beyond u_m = rings k > m, one
    # small product with a strictly-lower mask (the mean commutes with it).
    mass = by_ring.sum(-1, keepdim=True).clamp_min_(torch.finfo(a.dtype).tiny)
    share = by_ring.div_(mass).mean(-2)                                # [B, H, U + 1]
    outer = torch.ones(n_rings, n_rings - 1, dtype=a.dtype, device=a.device).tril(-1)
    return (share @ outer)[..., where.to(a.device)]                    # [B, H, R], requested order


def _prefix_mass_core(a: Tensor, layout: TokenLayout) -> Tensor:
    p = layout.num_prefix_tokens
    return a[..., p:, :p].sum(-1).mean(-1)  # empty prefix -> sums of nothing = 0


# --------------------------------------------------------------------------- public API


def attention_entropy_per_image(
    attn: Tensor,
    query: Query = "all",
    normalized: bool = False,
    layout: Optional[TokenLayout] = None,
    num_prefix_tokens: Optional[int] = None,
    check: bool = True,
) -> Tensor:
    """Attention entropy per image and head, ``[B, heads]`` float64, in nats.

    ``value[b, h] = mean_{i in Q} H_i`` with ``H_i = -sum_j A_ij log A_ij`` (``0 log 0 = 0``),
    ``j`` over all ``N`` keys, ``Q`` the queries chosen by ``query``: ``"all"`` (every
    token), ``"patch"`` (patch tokens) or ``"prefix"`` (prefix tokens, e.g. the class
    token; needs ``P > 0``). ``normalized=True`` divides by ``log N`` so 1 means uniform.
    ``"patch"``/``"prefix"`` need ``layout`` or ``num_prefix_tokens``. ``check`` refuses
    maps whose rows do not sum to 1.
    """
    a = _validate_attention(attn, layout, check)
    num_prefix = _resolve_prefix(a.shape[-1], layout, num_prefix_tokens)
    return _entropy_core(a, query, num_prefix, normalized)


def attention_entropy(
    attn: Tensor,
    query: Query = "all",
    normalized: bool = False,
    layout: Optional[TokenLayout] = None,
    num_prefix_tokens: Optional[int] = None,
    check: bool = True,
) -> Tensor:
    """Attention entropy per head, ``[heads]``: dense maps score high, one-hot maps 0.

    ``value[h] = mean_b mean_{i in Q} H_i``, ``H_i = -sum_j A_ij log A_ij`` in nats
    (``0 log 0 = 0``); ``normalized=True`` gives ``H / log N`` in ``[0, 1]``. See
    :func:`attention_entropy_per_image` for ``query``.
    """
    return attention_entropy_per_image(attn, query, normalized, layout, num_prefix_tokens, check).mean(0)


def mean_attention_distance_per_image(
    attn: Tensor,
    grid_size: Optional[IntOrPair] = None,
    patch_size: Optional[IntOrPair] = None,
    num_prefix_tokens: Optional[int] = None,
    renormalize: bool = True,
    layout: Optional[TokenLayout] = None,
    check: bool = True,
) -> Tensor:
    """Mean attention distance in pixels per image and head, ``[B, heads]`` float64.

    ``renormalize=True`` (the default, methods.md): ``value[b, h] = (1/G) sum_{i in patches}
    sum_{j in patches} A~_ij d_ij`` with ``A~_ij = A_ij / sum_{k in patches} A_ik`` and
    ``d_ij`` in pixels (row offsets times ``ph``, column offsets times ``pw``).
    ``renormalize=False`` is the sayakpaul/probing-vits variant: prefix columns dropped,
    ``A`` used as is, so mass on prefix tokens counts as distance 0 (an underestimate).
    Give ``layout=`` or ``grid_size`` + ``patch_size`` (int or ``(h, w)``) +
    ``num_prefix_tokens`` (default 0); ``N`` must equal ``P + gh * gw``.
    """
    lay = _make_layout(layout, grid_size, patch_size, num_prefix_tokens)
    a = _validate_attention(attn, lay, check)
    return _mad_core(a, lay, renormalize)


def mean_attention_distance(
    attn: Tensor,
    grid_size: Optional[IntOrPair] = None,
    patch_size: Optional[IntOrPair] = None,
    num_prefix_tokens: Optional[int] = None,
    renormalize: bool = True,
    layout: Optional[TokenLayout] = None,
    check: bool = True,
) -> Tensor:
    """Mean attention distance per head in pixels, ``[heads]``: how far patches look.

    ``value[h] = mean_b (1/G) sum_{i,j in patches} A~_ij d_ij`` (pixels), ``A~`` the
    patch block renormalised over patch keys; ``renormalize=False`` uses ``A`` without
    renormalising (probing-vits). See :func:`mean_attention_distance_per_image`.
    """
    return mean_attention_distance_per_image(
        attn, grid_size, patch_size, num_prefix_tokens, renormalize, layout, check
    ).mean(0)


def nonlocality_per_image(attn: Tensor, layout: TokenLayout, check: bool = True) -> Tensor:
    """ConViT non-locality per image and head, ``[B, heads]`` float64, patch units.

    ``value[b, h] = (1/G) sum_{i,j in patches} d_ij A_ij`` with ``d_ij`` in patch units and
    no renormalisation (as facebookresearch/convit ``get_attention_map``).
    """
    lay = _require_layout(layout, "nonlocality")
    return _nonlocality_core(_validate_attention(attn, lay, check), lay)


def nonlocality(attn: Tensor, layout: TokenLayout, check: bool = True) -> Tensor:
    """ConViT non-locality per head, ``[heads]``, to compare with ConViT's plots.

    ``value[h] = mean_b (1/G) sum_{i,j in patches} d_ij A_ij`` (patch units, raw ``A``).
    """
    return nonlocality_per_image(attn, layout, check).mean(0)


def globality_curve_per_image(
    attn: Tensor, layout: TokenLayout, radii: Union[Sequence[float], Tensor], check: bool = True
) -> Tensor:
    """Globality curve per image and head, ``[B, heads, R]`` float64.

    ``value[b, h, k] = (1/G) sum_{i in patches} sum_{j in patches} A~_ij [d_ij > r_k]``:
    the share of a patch query's patch-key attention farther than ``r_k`` patches
    (``A~`` renormalised over patch keys). At ``r = 0`` it is ``1 - mean_i A~_ii``.
    """
    lay = _require_layout(layout, "globality_curve")
    r = _radii_tensor(radii)
    return _globality_core(_validate_attention(attn, lay, check), lay, r)


def globality_curve(
    attn: Tensor, layout: TokenLayout, radii: Union[Sequence[float], Tensor], check: bool = True
) -> Tensor:
    """Globality curve per head, ``[heads, R]``: the whole distance profile, not just its mean.

    ``value[h, k] = mean_b (1/G) sum_{i,j in patches} A~_ij [d_ij > r_k]`` (patch units).
    """
    return globality_curve_per_image(attn, layout, radii, check).mean(0)


def prefix_mass_per_image(attn: Tensor, layout: TokenLayout, check: bool = True) -> Tensor:
    """Attention-sink mass per image and head, ``[B, heads]`` float64.

    ``value[b, h] = (1/G) sum_{i in patches} sum_{j in prefix} A_ij``; 0 without prefix tokens.
    """
    lay = _require_layout(layout, "prefix_mass")
    return _prefix_mass_core(_validate_attention(attn, lay, check), lay)


def prefix_mass(attn: Tensor, layout: TokenLayout, check: bool = True) -> Tensor:
    """Attention-sink mass per head, ``[heads]``: how much patches attend to prefix tokens.

    ``value[h] = mean_b (1/G) sum_{i in patches} sum_{j in prefix} A_ij``.
    """
    return prefix_mass_per_image(attn, layout, check).mean(0)
