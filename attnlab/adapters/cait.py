"""timm's ``Cait``: talking-heads self-attention over the patch tokens (heads mixed before and after
the softmax: ``scores`` is what goes into the softmax, ``own_pattern`` its softmax per head,
``pattern`` the attention applied, after the second mix, whose rows need not sum to 1: the
metrics read ``own_pattern``), and class attention (``blocks_token_only``),
where only the class token queries [class token + patches]."""
from __future__ import annotations

from contextlib import ExitStack

from torch import nn

from .base import Adapter, Observe, observed_softmax, wrap_forward


def _talking_heads():
    from timm.models.cait import TalkingHeadAttn

    return (TalkingHeadAttn,)


def _class_attention():
    from timm.models.cait import ClassAttn

    return (ClassAttn,)


def _patch_talking_heads(attn: nn.Module, observe: Observe, stack: ExitStack) -> None:
    # scores: the softmax's input (after proj_l); pattern: proj_w's output, the attention applied to v
    wrap_forward(attn, stack, observed_softmax(lambda point, t: observe(point, t) if point == "scores" else None))

    def after_mix(module: nn.Module, args: tuple, output) -> None:  # noqa: ANN001
        observe("pattern", output.permute(0, 3, 1, 2))

    stack.callback(attn.proj_w.register_forward_hook(after_mix).remove)


TALKING_HEADS = Adapter(family="timm Cait talking-heads attention", classes=_talking_heads, way="custom",
                        points=("scores", "own_pattern", "pattern"), distribution=False,
                        patch=_patch_talking_heads)
CLASS_ATTENTION = Adapter(family="timm Cait class attention", classes=_class_attention, way="sdpa",
                          geometry="class")
