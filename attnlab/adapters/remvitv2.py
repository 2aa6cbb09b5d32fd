"""attnlab's ReMViTv2 (``models/remvitv2.py``): MViTv2's pooled attention with a carried map.

Its attention reports to an ``observer`` it consults itself, so the capture sees what the block
computes, without patching torch: ``scores`` (the block's own logits with the relative position
terms as it adds them, S_l + P_l; capture derives ``own_pattern`` = softmax(S_l + P_l) from them),
``mixed_scores`` (C_l = a S_l + (1 - a) T(C_{l-1}) + P_l, what is carried to the next block) and
``pattern`` (softmax(C_l), the attention applied). Geometry as MViTv2's (pooled): metrics read the
applied attention, never the carried maps.
"""
from contextlib import ExitStack

from torch import nn

from .base import Adapter, Observe, _attribute


def _classes():
    from ..models.remvitv2 import ResidualMultiScaleAttention

    return (ResidualMultiScaleAttention,)


def _patch(module: nn.Module, observe: Observe, stack: ExitStack) -> None:
    stack.enter_context(_attribute(module, "observer", observe))


ADAPTER = Adapter(family="attnlab ReMViTv2 (pooled, carried logits)", classes=_classes, way="custom",
                  geometry="pooled", points=("scores", "mixed_scores", "own_pattern", "pattern"), patch=_patch)
