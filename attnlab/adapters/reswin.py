"""attnlab's ReSwin (:mod:`attnlab.models.reswin`): Swin windows whose logits carry ``R_l``.

Hook points per block, all ``[B * windows, heads, N, N]``: ``scores`` (``S_l + M_l``: relative
position bias inside, and the shift mask where the block has one, as in timm's Swin adapter),
``mixed_scores`` (``R_l``, the map carried to the next block, never masked), ``own_pattern``
(``softmax(S_l + M_l)``, the block's own attention, derived by the capture from ``scores``) and
``pattern`` (the applied ``softmax(R_l + M_l)``, what metrics read). The module hands them over.
"""
from __future__ import annotations

from contextlib import ExitStack

from torch import nn

from .base import Adapter, Observe, _attribute


def _classes():
    from ..models.reswin import ResidualWindowAttention

    return (ResidualWindowAttention,)


def _patch(module: nn.Module, observe: Observe, stack: ExitStack) -> None:
    stack.enter_context(_attribute(module, "_observe", observe))


ADAPTER = Adapter(family="attnlab ReSwin (windows, residual attention)", classes=_classes, way="custom",
                  geometry="window", points=("scores", "mixed_scores", "own_pattern", "pattern"), patch=_patch)
