"""Feature diversity of block outputs: do patch tokens collapse onto one another?

Both metrics take a block's output tokens ``[B, N, C]`` and a
:class:`~attnlab.layout.TokenLayout`, use the ``G`` patch tokens only (prefix tokens are
dropped: a class token is not a patch) and return one float64 value per image, ``[B]``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..layout import TokenLayout
from .validation import MetricInputError, describe_layout, require_layout, shape_str

__all__ = ["token_cosine_similarity", "effective_rank"]


def patch_tokens(tokens: Tensor, layout: TokenLayout, what: str) -> Tensor:
    """Validate ``tokens`` against ``layout`` and return the patch tokens ``[B, G, C]`` in float64."""
    layout = require_layout(layout, what)
    if not isinstance(tokens, Tensor):
        raise MetricInputError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != 3:
        raise MetricInputError(f"tokens must be [B, N, C], got shape {shape_str(tokens)}")
    if not tokens.is_floating_point():
        raise MetricInputError(f"tokens must be a floating-point tensor, got dtype {tokens.dtype}")
    if tokens.shape[0] == 0 or tokens.shape[2] == 0:
        raise MetricInputError(f"tokens are empty (shape {shape_str(tokens)})")
    if tokens.shape[1] != layout.num_tokens:
        raise MetricInputError(f"tokens have N={tokens.shape[1]} but the layout has {describe_layout(layout)}")
    return tokens[:, layout.num_prefix_tokens:, :].to(torch.float64)


def token_cosine_similarity(tokens: Tensor, layout: TokenLayout) -> Tensor:
    """Mean pairwise cosine similarity of patch tokens per image, ``[B]`` float64.

    ``value[b] = 1/(G(G-1)) sum_{i != j} cos(x_i, x_j)`` over the ``G`` patch tokens of
    image ``b`` (ordered pairs, equivalently unordered). 1 means full collapse. Computed
    without the ``G x G`` matrix: ``sum_{i != j} u_i.u_j = ||sum_i u_i||^2 - sum_i ||u_i||^2``
    for unit vectors ``u_i``; an all-zero token counts as cosine 0 with everything.
    Needs ``G >= 2``.
    """
    x = patch_tokens(tokens, layout, "token_cosine_similarity")
    g = x.shape[1]
    if g < 2:
        raise MetricInputError("token_cosine_similarity needs at least 2 patch tokens")
    u = torch.nn.functional.normalize(x, dim=-1)
    total = u.sum(dim=1).pow(2).sum(-1)
    diag = u.pow(2).sum(dim=(1, 2))
    return (total - diag) / (g * (g - 1))


def effective_rank(tokens: Tensor, layout: TokenLayout) -> Tensor:
    """Effective rank (Roy & Vetterli) of each image's ``[G, C]`` patch-token matrix, ``[B]``.

    ``value[b] = exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum_l s_l`` over the singular
    values ``s_k`` of the patch-token matrix, NOT centred: tokens that all equal one
    shared vector give 1 (centring would hide that collapse, and change the number
    whenever the mean token moves). Ranges over ``[1, min(G, C)]``; an all-zero matrix
    gives 0 (its rank).
    """
    x = patch_tokens(tokens, layout, "effective_rank")
    # singular values from the eigenvalues of the smaller Gram matrix (float64: s_k^2 keeps
    # ~8 significant digits of the smallest s_k relative to the largest, plenty for an entropy)
    gram = x @ x.transpose(1, 2) if x.shape[1] <= x.shape[2] else x.transpose(1, 2) @ x
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(-1)  # [B, min(G, C)], descending
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    erank = torch.exp(-torch.special.xlogy(p, p).sum(-1))
    return torch.where(total.squeeze(-1) > 0, erank, torch.zeros_like(erank))
