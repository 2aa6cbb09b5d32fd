"""High-norm tokens and the attention they draw (Darcet et al., "Vision transformers need
registers", ICLR 2024).

Large ViTs repurpose a few low-information patch tokens as scratch space: their norm in
the residual stream is many times the others', and later layers attend to them as
attention sinks. These functions find such tokens and measure that attention, on plain
tensors: block tokens ``[B, N, C]``, attention ``[B, heads, N, N]`` and a
:class:`~attnlab.layout.TokenLayout`. Only the ``G`` patch tokens are candidates (prefix
tokens are sinks by design; their mass is ``prefix_mass``).

The outlier criterion, per image: a patch token is *high-norm* when its L2 norm exceeds
Tukey's far-out fence of that image's patch-token norms, ``Q3 + k (Q3 - Q1)`` with
``k = 3`` (:data:`FENCE_K`). Darcet et al. use a fixed norm of 150 for DINOv2 ViT-g;
a fixed number fits one model, the fence fits any (it scales with the model's norms and
finds nothing in a model without outliers).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..layout import TokenLayout
from .features import patch_tokens
from .validation import MetricInputError, require_layout, shape_str, validate_attention

__all__ = ["FENCE_K", "NORM_QUANTILES", "high_norm_mass", "high_norm_share", "high_norm_tokens", "norm_quantiles",
           "token_norms"]

#: Tukey's far-out fence: outliers lie above Q3 + FENCE_K * IQR of an image's patch-token norms.
FENCE_K = 3.0
#: Quantiles of the patch-token norms reported per layer (0.5 is the median, 1.0 the largest).
NORM_QUANTILES: Tuple[float, ...] = (0.25, 0.5, 0.75, 0.99, 1.0)


def token_norms(tokens: Tensor, layout: TokenLayout) -> Tensor:
    """L2 norm of each patch token, ``[B, G]`` float64: ``||x_g||_2`` (prefix tokens dropped)."""
    return torch.linalg.vector_norm(patch_tokens(tokens, layout, "token_norms"), dim=-1)


def norm_quantiles(tokens: Tensor, layout: TokenLayout, q: Sequence[float] = NORM_QUANTILES) -> Tensor:
    """Quantiles ``q`` of each image's patch-token norms, ``[B, len(q)]`` (linear interpolation,
    ``torch.quantile``'s default)."""
    qs = torch.as_tensor(list(q), dtype=torch.float64)
    if qs.dim() != 1 or qs.numel() == 0 or bool((qs < 0).any() | (qs > 1).any()):
        raise MetricInputError(f"quantiles must be a non-empty list in [0, 1], got {list(q)}")
    norms = token_norms(tokens, layout)
    return torch.quantile(norms, qs.to(norms.device), dim=-1).T  # quantile puts q first: [len(q), B] -> [B, len(q)]


def high_norm_tokens(tokens: Tensor, layout: TokenLayout, k: float = FENCE_K,
                     norms: Optional[Tensor] = None) -> Tensor:
    """Which patch tokens are high-norm, ``[B, G]`` bool: ``||x_g|| > Q3 + k (Q3 - Q1)`` of that
    image's patch-token norms (``norms``: :func:`token_norms` of ``tokens``, when already computed)."""
    norms = token_norms(tokens, layout) if norms is None else norms
    q1, q3 = torch.quantile(norms, torch.tensor([0.25, 0.75], dtype=norms.dtype, device=norms.device), dim=-1)
    fence = q3 + k * (q3 - q1)  # [B]
    return norms > fence[:, None]


def high_norm_share(tokens: Tensor, layout: TokenLayout, k: float = FENCE_K) -> Tensor:
    """Share of each image's patch tokens that are high-norm, ``[B]`` float64 in [0, 1]."""
    return high_norm_tokens(tokens, layout, k).to(torch.float64).mean(-1)


def high_norm_mass(attn: Tensor, outliers: Tensor, layout: TokenLayout, check: bool = True,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """Attention mass the high-norm tokens receive, per image and head, ``[B, heads]`` (in ``dtype``).

    ``value[b, h] = (1/G) sum_{i in patches} sum_{j in outliers_b} A_ij``: the mean over
    patch queries of the attention summed over the outlier keys, the same queries as
    ``prefix_mass`` (so the two add up to at most 1 and sit side by side). ``outliers``
    is ``[B, G]`` bool over the patch tokens (:func:`high_norm_tokens` of the tokens the
    attention layer reads, its block's input). ``check``: refuse maps whose rows do not sum to 1.
    """
    lay = require_layout(layout, "high_norm_mass")
    a = validate_attention(attn, lay, check, dtype=dtype)
    if not isinstance(outliers, Tensor) or outliers.shape != (a.shape[0], lay.num_patches):
        got = shape_str(outliers) if isinstance(outliers, Tensor) else type(outliers).__name__
        raise MetricInputError(f"outliers must be [B, G] = [{a.shape[0]}, {lay.num_patches}] over the patch tokens, "
                               f"got {got}")
    p = lay.num_prefix_tokens
    keys = outliers.to(device=a.device, dtype=a.dtype)  # [B, G] in {0, 1}
    return torch.einsum("bhqk,bk->bhq", a[..., p:, p:], keys).mean(-1)  # sum over outlier keys, mean over queries
