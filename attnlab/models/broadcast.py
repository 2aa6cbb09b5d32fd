"""Context broadcasting (CB): every block adds the token mean, i.e. uniform attention.

CB (Hyeon-Woo et al., ICCV 2023) argues that ViTs want dense attention but struggle to
learn it through the softmax, so it hands every block the dense mixing for free:

    CB(x) = 0.5 * x + 0.5 * mean_over_tokens(x)          x: [B, N, C]

The mean runs over all tokens, the class token included. CB adds no parameters. The
``learnable_scale`` variant (CB_S) scales the broadcast term per channel,

    CB_S(x) = 0.5 * x + 0.5 * (s * mean_over_tokens(x))  s: [C], initialised to 1,

so that it starts out equal to CB (the exact form of CB_S is not published; this is
attnlab's choice). ``BroadcastBlock`` puts CB at the end of the MLP branch, inside the
residual (``placement="mlp"``, the default), or after the whole block
(``placement="block"``); the two placements are what public reimplementations use.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from timm.models.vision_transformer import Block

Placement = Literal["mlp", "block"]
PLACEMENTS: tuple[str, ...] = ("mlp", "block")


class ContextBroadcast(nn.Module):
    """Mix every token half-and-half with the mean of all tokens (uniform attention)."""

    def __init__(self, dim: int | None = None, learnable_scale: bool = False) -> None:
        super().__init__()
        if learnable_scale:
            if dim is None:
                raise ValueError("ContextBroadcast(learnable_scale=True) needs the channel dim")
            self.scale = nn.Parameter(torch.ones(dim))
        else:
            self.register_parameter("scale", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        if self.scale is not None:
            mean = mean * self.scale
        # (x + mean) * 0.5 equals 0.5 x + 0.5 mean exactly in floating point (halving is exact).
        return (x + mean).mul_(0.5)

    def extra_repr(self) -> str:
        return f"learnable_scale={self.scale is not None}"


def check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown CB placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
    return placement


class BroadcastBlock(Block):
    """timm's pre-norm ViT block with context broadcasting in every forward pass.

    Everything but the broadcast is timm's ``Block``, so ViT and ViT+CB weights share one
    state-dict layout (CB_S adds ``broadcast.scale``).
    """

    def __init__(
        self,
        dim: int,
        *args,
        cb_placement: Placement = "mlp",
        cb_learnable_scale: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(dim, *args, **kwargs)
        self.cb_placement = check_placement(cb_placement)
        self.broadcast = ContextBroadcast(dim, learnable_scale=cb_learnable_scale)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        return mlp_branch(self, x)


def mlp_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MLP half of a block, with CB where the block's placement puts it (if anywhere)."""
    broadcast = getattr(block, "broadcast", None)
    placement = getattr(block, "cb_placement", None)
    y = block.mlp(block.norm2(x))
    if broadcast is not None and placement == "mlp":
        y = broadcast(y)
    x = x + block.drop_path2(block.ls2(y))
    if broadcast is not None and placement == "block":
        x = broadcast(x)
    return x
