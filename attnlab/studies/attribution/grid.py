"""Tokens -> patch grid, the reshape pytorch-grad-cam needs for a transformer layer.

Single-grid models (ViT, DeiT, EVA, BEiT, RelPos, CaiT's patch blocks, Hugging Face ViTs):
the reshape comes from the model's ``TokenLayout`` at the input's size (any number of prefix
tokens: class, distillation, register; any grid, non-square too), never a hard-coded 14x14.
Multi-stage models have a grid per stage: Swin's blocks give ``[B, H, W, C]`` (timm's
``output_fmt`` NHWC), MViTv2's ``[B, N, C]`` on the stage's grid, which is the image pooled by
the stage's stride (``ceil(H / s) x ceil(W / s)``, as timm's strided convolutions and pooling pad).
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import nn

from ...errors import AttnlabError
from ...layout import TokenLayout

Pair = Tuple[int, int]


def tokens_to_grid(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, N, C]`` tokens -> ``[B, C, gh, gw]`` patch grid, dropping the layout's prefix tokens.

    A ``[B, G, C]`` tensor of patch tokens only (no prefix), a tuple (its first element)
    and an NCHW map pass too.
    """
    if isinstance(tokens, (tuple, list)):
        tokens = tokens[0]
    if tokens.ndim == 4:
        return tokens
    if tokens.ndim != 3:
        raise ValueError(f"expected [batch, tokens, channels] from the target layer, got shape {tuple(tokens.shape)}; "
                         "pick a layer inside the transformer blocks")
    b, n, c = tokens.shape
    gh, gw = layout.grid_size
    if n == layout.num_tokens:
        tokens = tokens[:, layout.num_prefix_tokens:]
    elif n != layout.num_patches:
        raise ValueError(f"the target layer gives {n} tokens, but the model's layout has {layout.num_prefix_tokens} "
                         f"prefix + {gh}x{gw} patch tokens; pick a layer in the transformer blocks")
    # patch tokens are stored row-major: token i * gw + j is grid cell (i, j)
    return tokens.reshape(b, gh, gw, c).permute(0, 3, 1, 2)


def make_reshape_transform(layout: TokenLayout) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ``reshape_transform`` for a model's layout (any prefix count, any grid)."""
    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        return tokens_to_grid(tokens, layout)

    return reshape_transform


def pooled_grid_of(n: int, image: Pair) -> Pair:
    """The grid of ``n`` tokens over an ``image``: ``(ceil(H / s), ceil(W / s))``, smallest stride ``s`` that fits."""
    h, w = image
    for s in range(1, max(h, w) + 1):
        grid = (-(-h // s), -(-w // s))
        if grid[0] * grid[1] == n:
            return grid
    raise ValueError(f"the target layer gives {n} tokens, which no strided grid of a {h}x{w} image has; "
                     "pick a layer in the transformer blocks")


def stage_tokens_to_grid(tokens: torch.Tensor, image: Pair, num_prefix_tokens: int = 0,
                         channels_last: bool = False) -> torch.Tensor:
    """A multi-stage model's layer output -> ``[B, C, gh, gw]``: ``[B, H, W, C]`` (``channels_last``,
    Swin) is permuted; ``[B, P + gh * gw, C]`` (MViTv2) drops its prefix tokens and is laid on
    the stage's grid (:func:`pooled_grid_of`); a tuple passes its first element."""
    if isinstance(tokens, (tuple, list)):
        tokens = tokens[0]
    if tokens.ndim == 4:
        return tokens.permute(0, 3, 1, 2) if channels_last else tokens      # NHWC -> NCHW
    if tokens.ndim != 3:
        raise ValueError(f"expected [batch, tokens, channels] from the target layer, got shape {tuple(tokens.shape)}; "
                         "pick a layer inside the transformer stages")
    tokens = tokens[:, num_prefix_tokens:]
    b, n, c = tokens.shape
    gh, gw = pooled_grid_of(n, image)
    return tokens.reshape(b, gh, gw, c).permute(0, 3, 1, 2)                 # row-major tokens -> grid


def has_stage_grids(model: nn.Module) -> bool:
    """Whether the model's tokens change grid from stage to stage (windowed or pooled attention: Swin, MViTv2)."""
    from ...adapters import find_attention

    return any(f.adapter.geometry in ("window", "pooled") for f in find_attention(model))


def reshape_transform_for(model: nn.Module, image: Pair) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ``reshape_transform`` for ``model`` on ``image``-sized inputs, whatever its family."""
    if has_stage_grids(model):
        channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        return lambda tokens: stage_tokens_to_grid(tokens, image, prefix, channels_last)
    return make_reshape_transform(TokenLayout.from_model(model, image))


def patch_grid(model: nn.Module, image: Pair) -> Pair:
    """The ``(gh, gw)`` grid of the model's patch embedding at ``image`` size: the patches that the
    perturbation protocol removes (a ViT's patches; Swin's 4x4 patches; MViTv2's strided convolution)."""
    try:
        return TokenLayout.from_model(model, image).grid_size
    except ValueError:
        pass
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if isinstance(proj, nn.Conv2d):  # out = floor((in + 2 p - k) / s) + 1, per axis
        return tuple((size + 2 * p - k) // s + 1
                     for size, p, k, s in zip(image, proj.padding, proj.kernel_size, proj.stride))
    raise AttnlabError(f"cannot tell the patch grid of {type(model).__name__} for the perturbation curves; "
                       "use --faithfulness road,deletion")
