"""Per-head metrics of attention maps (definitions: README, "Attention metrics").

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

The arithmetic lives in :mod:`.kernels` and the input checks in :mod:`.validation`,
shared with the streaming accumulator; this module is the API on top.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence, Union

from torch import Tensor

from ..layout import TokenLayout
from .kernels import entropy_core, globality_core, mad_core, nonlocality_core, prefix_mass_core
from .validation import (
    IntOrPair,
    MetricInputError,
    make_layout,
    radii_tensor,
    require_layout,
    resolve_prefix,
    validate_attention,
)

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
    a = validate_attention(attn, layout, check)
    num_prefix = resolve_prefix(a.shape[-1], layout, num_prefix_tokens)
    return entropy_core(a, query, num_prefix, normalized)


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

    ``renormalize=True`` (the default): ``value[b, h] = (1/G) sum_{i in patches}
    sum_{j in patches} A~_ij d_ij`` with ``A~_ij = A_ij / sum_{k in patches} A_ik`` and
    ``d_ij`` in pixels (row offsets times ``ph``, column offsets times ``pw``).
    ``renormalize=False`` is the sayakpaul/probing-vits variant: prefix columns dropped,
    ``A`` used as is, so mass on prefix tokens counts as distance 0 (an underestimate).
    Give ``layout=`` or ``grid_size`` + ``patch_size`` (int or ``(h, w)``) +
    ``num_prefix_tokens`` (default 0); ``N`` must equal ``P + gh * gw``.
    """
    lay = make_layout(layout, grid_size, patch_size, num_prefix_tokens)
    a = validate_attention(attn, lay, check)
    return mad_core(a, lay, renormalize)


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
    lay = require_layout(layout, "nonlocality")
    return nonlocality_core(validate_attention(attn, lay, check), lay)


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
    lay = require_layout(layout, "globality_curve")
    r = radii_tensor(radii)
    return globality_core(validate_attention(attn, lay, check), lay, r)


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
    lay = require_layout(layout, "prefix_mass")
    return prefix_mass_core(validate_attention(attn, lay, check), lay)


def prefix_mass(attn: Tensor, layout: TokenLayout, check: bool = True) -> Tensor:
    """Attention-sink mass per head, ``[heads]``: how much patches attend to prefix tokens.

    ``value[h] = mean_b (1/G) sum_{i in patches} sum_{j in prefix} A_ij``.
    """
    return prefix_mass_per_image(attn, layout, check).mean(0)
