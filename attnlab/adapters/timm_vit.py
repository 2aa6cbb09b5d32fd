"""timm's ``VisionTransformer`` family (ViT, DeiT, DINOv2 and CLIP weights, register tokens, FlexiViT)
and attnlab's ReViT / CB, whose attention is ``timm.layers.Attention`` or ReViT's
``ResidualAttention``: run explicitly by ``attnlab.models.residual.explicit_attention``, which
also emits ReViT's ``mixed_scores`` (R_l) and ``own_pattern`` (softmax(S_l))."""
from __future__ import annotations

from contextlib import ExitStack
from typing import Tuple

from torch import nn

from .base import Adapter, Observe


def _classes() -> Tuple[type, ...]:
    from timm.layers import Attention

    from ..models.residual import ResidualAttention

    return (Attention, ResidualAttention)


def _patch(attn: nn.Module, observe: Observe, stack: ExitStack) -> None:
    from ..models.residual import ResidualAttention, explicit_attention

    had = "forward" in attn.__dict__
    original = attn.__dict__.get("forward")
    workspace = getattr(observe, "workspace", None)  # set when the observer keeps nothing (capture.hooks)
    if isinstance(attn, ResidualAttention):
        def forward(x, residual=None, alpha=None, attn_mask=None):  # noqa: ANN001, ANN202
            return explicit_attention(attn, x, residual, alpha, attn_mask, observe=observe, workspace=workspace)
    else:
        def forward(x, attn_mask=None, is_causal=False):  # noqa: ANN001, ANN202
            if is_causal:
                raise NotImplementedError("attnlab does not capture causal attention")
            return explicit_attention(attn, x, None, None, attn_mask, observe=observe, workspace=workspace,
                                      keep_logits=False)[0]  # timm's Attention returns no logits
    attn.forward = forward

    def restore() -> None:
        if had:
            attn.forward = original
        else:
            attn.__dict__.pop("forward", None)

    stack.callback(restore)


ADAPTER = Adapter(family="timm VisionTransformer (ViT, DeiT, registers), ReViT, CB", classes=_classes,
                  way="custom", points=("scores", "mixed_scores", "own_pattern", "pattern"), patch=_patch)
