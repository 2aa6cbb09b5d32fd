"""Checks on what the metrics are given: one place that says what a measurable map is.

The per-head metrics (:mod:`.attention`), the streaming accumulator (:mod:`.streaming`)
and the feature metrics (:mod:`.features`) all refuse bad input with the same
:class:`MetricInputError` and the same wording, so every check lives here.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import AttnlabError
from ..layout import TokenLayout

__all__ = [
    "IntOrPair",
    "MetricInputError",
    "ROW_SUM_TOLERANCE",
    "describe_layout",
    "make_layout",
    "radii_tensor",
    "require_layout",
    "resolve_prefix",
    "shape_str",
    "validate_attention",
]

IntOrPair = Union[int, Tuple[int, int]]

#: How far a row sum may stray from 1 (and an entry below 0) before ``check=True`` refuses
#: the map. Loose enough for softmax outputs stored in that dtype, tight enough to catch
#: logits, unnormalised scores or head-averaged-and-rescaled maps.
ROW_SUM_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float32: 1e-4, torch.float64: 1e-8}


class MetricInputError(AttnlabError, ValueError):
    """Input a metric cannot measure (wrong shape, layout mismatch, rows not summing to 1).

    A ``ValueError`` for Python callers and an ``AttnlabError`` so the CLI prints one line.
    """


def shape_str(t: Tensor) -> str:
    """``[2, 3, 5, 5]``: a tensor's shape as error messages print it."""
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def describe_layout(layout: TokenLayout) -> str:
    """``1 prefix + 2x2 patches = 5 tokens``: a layout as error messages print it."""
    gh, gw = layout.grid_size
    return f"{layout.num_prefix_tokens} prefix + {gh}x{gw} patches = {layout.num_tokens} tokens"


def validate_attention(
    attn: Tensor, layout: Optional[TokenLayout], check: bool, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Check ``attn`` is ``[B, heads, N, N]`` (matching ``layout``) and return it in ``dtype``.

    ``check=True`` also refuses maps with NaN/inf, negative entries or rows whose sum is
    off 1 by more than :data:`ROW_SUM_TOLERANCE` of their dtype.
    """
    if not isinstance(attn, Tensor):
        raise MetricInputError(f"attention must be a torch.Tensor, got {type(attn).__name__}")
    if attn.dim() != 4:
        raise MetricInputError(f"attention must be [B, heads, N, N], got shape {shape_str(attn)}")
    if attn.shape[-1] != attn.shape[-2]:
        raise MetricInputError(f"attention must be square over tokens [B, heads, N, N], got shape {shape_str(attn)}")
    if not attn.is_floating_point():
        raise MetricInputError(f"attention must be a floating-point tensor, got dtype {attn.dtype}")
    if attn.numel() == 0:
        raise MetricInputError(f"attention is empty (shape {shape_str(attn)})")
    if layout is not None and attn.shape[-1] != layout.num_tokens:
        raise MetricInputError(
            f"attention has N={attn.shape[-1]} tokens but the layout has {describe_layout(layout)}"
        )
    if check:
        # Two passes, not three: NaN propagates through min(), and an inf entry makes its
        # row sum inf or NaN, so the min and the row sums also catch non-finite maps.
        tol = ROW_SUM_TOLERANCE.get(attn.dtype, 1e-4)
        # row sums in the map's precision (float32 for half types): their rounding, about 1e-7 * sqrt(N)
        # in float32, is far below the tolerance, and a float64 sum of float32 maps costs more than the metrics
        wide = torch.float32 if attn.dtype in (torch.float16, torch.bfloat16) else None
        err_t = (attn.sum(dim=-1, dtype=wide) - 1.0).abs().max()                 # max_i |sum_j A_ij - 1|
        low, err = torch.stack([attn.min().to(err_t.dtype), err_t]).tolist()      # one copy to the host
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


def resolve_prefix(n: int, layout: Optional[TokenLayout], num_prefix_tokens: Optional[int]) -> Optional[int]:
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


def require_layout(layout: object, what: str) -> TokenLayout:
    """``layout`` itself if it is a :class:`TokenLayout`; ``what`` names the caller in the error."""
    if not isinstance(layout, TokenLayout):
        raise MetricInputError(f"{what} needs a TokenLayout, got {type(layout).__name__}")
    return layout


def make_layout(
    layout: Optional[TokenLayout],
    grid_size: Optional[IntOrPair],
    patch_size: Optional[IntOrPair],
    num_prefix_tokens: Optional[int],
) -> TokenLayout:
    """A layout from either ``layout=`` or the (grid_size, patch_size, num_prefix_tokens) ints.

    The two ways in of :func:`~attnlab.metrics.mean_attention_distance`.
    """
    if layout is not None:
        if grid_size is not None or patch_size is not None or num_prefix_tokens is not None:
            raise MetricInputError("give either layout= or grid_size/patch_size/num_prefix_tokens, not both")
        return require_layout(layout, "mean_attention_distance")
    if grid_size is None or patch_size is None:
        raise MetricInputError("mean_attention_distance needs layout= or both grid_size and patch_size")
    try:
        return TokenLayout(num_prefix_tokens=int(num_prefix_tokens or 0), grid_size=grid_size, patch_size=patch_size)
    except (TypeError, ValueError, IndexError) as exc:
        raise MetricInputError(
            f"bad layout (grid_size={grid_size}, patch_size={patch_size}, num_prefix_tokens={num_prefix_tokens}): {exc}"
        ) from None


def radii_tensor(radii: Union[Sequence[float], Tensor]) -> Tensor:
    """Globality radii as a 1-D float64 CPU tensor; refuses empty, negative or non-finite radii."""
    r = torch.as_tensor(radii, dtype=torch.float64).detach().cpu()
    if r.dim() == 0:
        r = r.reshape(1)
    if r.dim() != 1 or r.numel() == 0:
        raise MetricInputError(f"radii must be a non-empty 1-D sequence, got shape {list(r.shape)}")
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise MetricInputError(f"radii must be finite and >= 0, got {r.tolist()}")
    return r
