"""Tokens -> patch grid, the reshape pytorch-grad-cam needs for a ViT layer.

The reshape comes from the model's ``TokenLayout`` at the input's size (any number of
prefix tokens: class, distillation, register; any grid, non-square too), never a
hard-coded 14x14.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...layout import TokenLayout


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
